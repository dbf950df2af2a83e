"""Seeded mutations of valid ONNX files, loaded in a child process under memory and time limits:
every mutant must load (matching onnxruntime) or end in verikit's own error type. Used by
tests/test_onnx_fuzz.py (a few seconds) and benchmarks/onnx_fuzz.py (thousands of mutants)."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

MEMORY_LIMIT = 3 << 30  # bytes of address space for the child (torch alone maps ~1 GB)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption of a serialised model: flipped bytes, a truncation, a deleted or
    duplicated span, or a structural change made through protobuf (data types, dims, attributes)."""
    kind = rng.integers(0, 5)
    if kind == 0:
        out = bytearray(data)
        for position in rng.integers(0, len(out), size=int(rng.integers(1, 8))):
            out[position] = int(rng.integers(0, 256))
        return bytes(out)
    if kind == 1:
        return data[: int(rng.integers(0, len(data)))]
    if kind == 2:
        start = int(rng.integers(0, len(data)))
        stop = min(len(data), start + int(rng.integers(1, 64)))
        return data[:start] + (data[start:stop] * 2 if rng.random() < 0.5 else b"") + data[stop:]
    return _structural(data, rng)


def _structural(data: bytes, rng: np.random.Generator) -> bytes:
    """A change that keeps the file parseable: an element type, a dimension, an attribute or a weight."""
    model = onnx.ModelProto()
    model.ParseFromString(data)
    choice = rng.integers(0, 4)
    if choice == 0 and model.graph.initializer:
        tensor = model.graph.initializer[int(rng.integers(0, len(model.graph.initializer)))]
        tensor.data_type = int(rng.choice([0, 2, 7, 9, 11, 16, 91]))
    elif choice == 1:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if dims:
            dims[int(rng.integers(0, len(dims)))].dim_value = int(rng.choice([0, 1, 3, 10 ** 6]))
    elif choice == 2 and model.graph.node:
        node = model.graph.node[int(rng.integers(0, len(model.graph.node)))]
        node.attribute.append(onnx.helper.make_attribute("alpha" if rng.random() < 0.5 else "axis",
                                                         float(rng.normal()) if rng.random() < 0.5 else 7))
    elif model.graph.initializer:
        tensor = model.graph.initializer[int(rng.integers(0, len(model.graph.initializer)))]
        values = onnx.numpy_helper.to_array(tensor).copy()
        if values.dtype.kind == "f" and values.size:
            values.flat[int(rng.integers(0, values.size))] = rng.choice([np.inf, -np.inf, np.nan, 1e38])
            tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    return model.SerializeToString()


@dataclass
class LoadReport:
    """Outcomes of loading mutants: loaded, clean errors (verikit's own), other exceptions, hangs."""

    tried: int = 0
    loaded: int = 0
    clean_errors: int = 0
    other: list[str] = field(default_factory=list)
    hangs: int = 0


def load_in_child(paths: list[Path], seconds: float) -> LoadReport:
    """Load every file in one child process under MEMORY_LIMIT, each with `seconds` of CPU at most;
    a child killed by a limit counts its current file as a hang and the rest are retried."""
    report, pending = LoadReport(), list(paths)
    while pending:
        child = subprocess.run([sys.executable, "-c", _CHILD, str(MEMORY_LIMIT), str(seconds), *map(str, pending)],
                               capture_output=True, text=True, timeout=60 + seconds * len(pending))
        outcomes = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
        for outcome in outcomes:
            report.tried += 1
            if outcome["result"] == "loaded":
                report.loaded += 1
            elif outcome["result"] == "clean":
                report.clean_errors += 1
            elif outcome["result"] == "hang":
                report.hangs += 1
            else:
                report.other.append(f"{outcome['path']}: {outcome['result']}")
        pending = pending[len(outcomes):]
        if pending and child.returncode != 0:  # killed (memory or time) while loading pending[0]
            report.tried, report.hangs, pending = report.tried + 1, report.hangs + 1, pending[1:]
    return report


_CHILD = """
import json, resource, signal, sys, warnings
warnings.simplefilter("ignore")
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
import torch
torch.set_num_threads(1)
from verikit.errors import VerikitError
from verikit.onnx_import import load_model
class Hang(Exception):
    pass
def alarm(*_):
    raise Hang()
signal.signal(signal.SIGALRM, alarm)
for path in sys.argv[3:]:
    signal.setitimer(signal.ITIMER_REAL, float(sys.argv[2]))
    try:
        load_model(path)
        result = "loaded"
    except VerikitError:
        result = "clean"
    except Hang:
        result = "hang"
    except BaseException as error:
        result = f"{type(error).__name__}: {str(error)[:200]}"
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({"path": path, "result": result}), flush=True)
"""
