"""verikit: prove or refute properties of neural networks.

    import verikit
    model = verikit.load_model("net.onnx")
    spec = verikit.load_spec("prop.vnnlib", model)
    print(verikit.verify(model, spec, timeout=60).status)
    net = verikit.train("singleprop", "digits", "mnist-small", eps=0.05)   # a torch nn.Sequential
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_model", "load_spec", "bound", "verify", "certified_radius", "train", "export_onnx"]
_HOMES = {"train": "verikit.trainers.run", "export_onnx": "verikit.trainers.export"}
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The public functions live in `verikit.api`, imported (with torch) on first use: the command line
    sets up its process before torch's import."""
    if name in __all__:
        import importlib

        home = importlib.import_module(_HOMES.get(name, "verikit.api"))
        globals()[name] = getattr(home, name)
        return globals()[name]
    raise AttributeError(f"module 'verikit' has no attribute {name!r}")
