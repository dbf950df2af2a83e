"""An example third-party verikit plugin: one layer rule, registered through an entry point."""
