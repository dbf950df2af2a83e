"""Max |verikit forward - onnxruntime| on every benchmark network (float32, 16 random inputs in [-1, 1]).

    python benchmarks/forward_error.py [BENCHMARK_DIR]   # prints a markdown table
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from verikit.onnx_import import load_model
from verikit.onnx_runtime import evaluate


def main(root: Path) -> None:
    print("| network | ops | max abs error | output scale | relative |")
    print("|---|---|---:|---:|---:|")
    for path in sorted(root.rglob("*.onnx")):
        graph = load_model(path, check=False)
        x = torch.rand(16, graph.input_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.no_grad():
            ours = graph.forward_flat(x).double().numpy()
        reference = evaluate(path, graph, x.numpy())
        error, scale = np.abs(ours - reference).max(), np.abs(reference).max()
        ops = ",".join(sorted({n.op_type for n in graph.nodes}))
        print(f"| {path.relative_to(root)} | {ops} | {error:.2e} | {scale:.3g} | {error / (1 + scale):.1e} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "benchmarks")
