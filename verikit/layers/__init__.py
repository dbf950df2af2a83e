"""Built-in layer plugins, one module per ONNX op family; each registers through verikit's entry points."""
