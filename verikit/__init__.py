"""verikit: prove or refute properties of neural networks.

    import verikit
    model = verikit.load_model("net.onnx")
    spec = verikit.load_spec("prop.vnnlib", model)
    print(verikit.verify(model, spec, timeout=60).status)
"""
from verikit.api import bound, certified_radius, load_model, load_spec, verify

__all__ = ["load_model", "load_spec", "bound", "verify", "certified_radius"]
__version__ = "0.1.0"
