"""onnxruntime as the reference semantics: the import-time forward check and the re-check of every
counterexample before `sat` is written."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from verikit.errors import ModelError
from verikit.graph import Graph

# Max |IR - onnxruntime| allowed at load, relative to the output scale (float32 arithmetic differs
# in summation order only; a wrong rule shows errors many orders of magnitude larger).
FORWARD_TOLERANCE = 1e-4


def session(path: str):
    """One cached onnxruntime session per model file (a rewritten file gets a new one)."""
    stat = Path(path).stat()
    return _session(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _session(path: str, modified: int, size: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types (Fail, InvalidArgument, ...)
        raise ModelError(f"onnxruntime cannot load the model: {_first_line(error)}", path=path,
                         fix="the file is corrupt or uses types onnxruntime rejects; export it again") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def evaluate(path: str | Path, graph: Graph, inputs: np.ndarray) -> np.ndarray:
    """Outputs [N, n_out] of the ONNX file at flat inputs [N, n_in], one sample at a time (the
    benchmark networks have a fixed batch size of 1)."""
    runtime = session(str(path))
    name = graph.input_name
    dtype = np.float64 if runtime.get_inputs()[0].type == "tensor(double)" else np.float32
    try:
        rows = [runtime.run(None, {name: row.reshape(graph.input_shape).astype(dtype)})[0].reshape(-1)
                for row in np.asarray(inputs).reshape(len(inputs), -1)]
    except Exception as error:  # onnxruntime's own exception types
        raise ModelError(f"onnxruntime cannot run the model on an input of shape {list(graph.input_shape)}: "
                         f"{_first_line(error)}", path=str(path),
                         fix="the file's declared shapes are inconsistent; export it again") from None
    return np.stack(rows).astype(np.float64)


def check_against_onnxruntime(graph: Graph, path: str | Path, samples: int = 4, seed: int = 0) -> float:
    """Compare the IR forward with onnxruntime on random inputs; a mismatch is a ModelError."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, graph.input_size, generator=generator, dtype=torch.float32) * 2 - 1
    with torch.no_grad():
        ours = graph.forward_flat(x).double().numpy()
    reference = evaluate(path, graph, x.numpy())
    if not np.isfinite(reference).all():
        raise ModelError("onnxruntime's own output is not finite on random inputs in [-1, 1]",
                         path=str(path), fix="the weights or constants are corrupt or overflow float32; "
                         "check the export")
    with np.errstate(all="ignore"):
        error = float(np.abs(ours - reference).max())
        scale = 1.0 + float(np.abs(reference).max())
    if not np.isfinite(error) or error > FORWARD_TOLERANCE * scale:
        raise ModelError(f"verikit's forward differs from onnxruntime by {error:.3g} (output scale {scale:.3g})",
                         path=str(path), fix="this is a bug in a layer rule; run with --debug and report it, "
                         "or pass --no-check to skip the comparison at your own risk")
    return error
