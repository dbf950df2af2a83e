"""Export a trained nn.Sequential to ONNX, checked before the file is written.

The legacy TorchScript exporter (`torch.onnx.export(..., dynamo=False)`) is used: the dynamo exporter,
torch 2.13's default, needs onnxscript, which is not a dependency of verikit, and the legacy one maps
Conv2d / Linear / ReLU / Flatten to ONNX Conv / Gemm / Relu / Flatten, ops verikit verifies. The file
is written to a temporary name, loaded with `verikit.load_model` (which checks it against onnxruntime),
compared with the torch model's outputs, and only then moved onto `path`.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from verikit.errors import VerikitError

OPSET = 13
TOLERANCE = 1e-4  # absolute, on logits, between torch and the exported model


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, force: bool = False,
                check_inputs: torch.Tensor | None = None) -> Path:
    """Write `model` (inputs [1, *input_shape]) to `path` as ONNX; never replace an existing file
    unless `force`. `check_inputs` ([N, *input_shape]) are compared; random ones when None."""
    path = Path(path)
    if path.exists() and not force:
        raise VerikitError("the output file exists", path=str(path), fix="pass --force to replace it, or choose "
                                                                         "another --out")
    if not path.parent.exists():
        raise VerikitError("its directory does not exist", path=str(path), fix="create the directory first")
    model = model.float().eval()
    handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(handle)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(model, (torch.zeros(1, *input_shape),), temporary, dynamo=False,
                              input_names=["input"], output_names=["logits"], opset_version=OPSET)
        check_export(model, temporary, input_shape, check_inputs)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def check_export(model: nn.Module, onnx_path: str, input_shape: tuple[int, ...],
                 inputs: torch.Tensor | None = None) -> None:
    """Load the file with verikit (checked against onnxruntime there) and compare its outputs with the
    torch model's on `inputs`; a mismatch is an error."""
    from verikit.api import load_model
    from verikit.onnx_runtime import evaluate

    graph = load_model(onnx_path, check=True)
    if inputs is None:
        inputs = torch.rand(8, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(inputs.float())
        ours = graph.forward(inputs.float()).reshape(expected.shape)
    runtime = torch.as_tensor(evaluate(onnx_path, graph, inputs.flatten(1).numpy())).reshape(expected.shape).float()
    for name, actual in (("verikit", ours), ("onnxruntime", runtime)):
        gap = float((actual - expected).abs().max())
        if gap > TOLERANCE:
            raise VerikitError(f"the exported model differs from the torch model by {gap:.3g} ({name})",
                               fix="export with plain Conv2d / Linear / ReLU / Flatten layers")
