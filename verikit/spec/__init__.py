"""Specifications: the Property form, and readers for VNN-LIB and YAML."""
