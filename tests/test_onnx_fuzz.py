"""Corrupt ONNX files never reach verikit's internals: seeded mutants of small models (every op
family) load or fail with verikit's own error, within memory and time limits, in a child process."""
from __future__ import annotations

import numpy as np

from netgen import cnn, mlp, residual
from onnx_mutants import load_in_child, mutate


def test_mutated_models_load_or_fail_cleanly(tmp_path):
    originals = [mlp(tmp_path / "mlp.onnx", "Sigmoid", seed=1), cnn(tmp_path / "cnn.onnx", "MaxPool", seed=2),
                 residual(tmp_path / "res.onnx", projection=True, seed=3)]
    rng = np.random.default_rng(2026)
    paths = []
    for index in range(60):
        data = originals[index % len(originals)].read_bytes()
        path = tmp_path / f"mutant_{index}.onnx"
        path.write_bytes(mutate(data, rng))
        paths.append(path)
    report = load_in_child(paths, seconds=10)
    assert report.other == [] and report.hangs == 0, report
    assert report.tried == len(paths) and report.clean_errors > 10 and report.loaded > 0, report
