"""Training: trainer plugins (standard, pgd-at, ibp, crown-ibp, singleprop), offline datasets, the
architectures they train, the bridge to verikit's bound engines, and the ONNX export of the result."""
