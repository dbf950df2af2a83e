"""Built-in method plugins, one module per method; each registers through verikit's entry points."""
