"""The bound engines shared by all methods: forward interval propagation and back-substitution."""
