"""The verify pipeline end to end on real VNN-COMP instances: no verdict may contradict the expected
answer, and every `sat` carries a counterexample that onnxruntime confirms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import benchmark_instances
from verikit.api import load_model, load_spec
from verikit.onnx_runtime import evaluate
from verikit.results import format_result, read_result, write_result
from verikit.pipeline import VerifyOptions, verify

# A fixed sample of ACAS Xu: sat and unsat instances over several properties and networks.
ACAS_SAMPLE = [("ACASXU_run2a_1_1_batch_2000.onnx", "prop_1.vnnlib"),
               ("ACASXU_run2a_2_1_batch_2000.onnx", "prop_2.vnnlib"),
               ("ACASXU_run2a_4_2_batch_2000.onnx", "prop_2.vnnlib"),
               ("ACASXU_run2a_1_9_batch_2000.onnx", "prop_3.vnnlib"),
               ("ACASXU_run2a_1_7_batch_2000.onnx", "prop_3.vnnlib"),
               ("ACASXU_run2a_1_1_batch_2000.onnx", "prop_6.vnnlib"),
               ("ACASXU_run2a_5_3_batch_2000.onnx", "prop_4.vnnlib")]


def _run(row: dict, timeout: float) -> tuple[str, object]:
    graph = load_model(row["onnx"])
    prop = load_spec(row["vnnlib"], graph)
    verdict = verify(graph, prop, VerifyOptions(timeout=timeout))
    if verdict.status == "sat":
        x, y = verdict.counterexample
        reference = evaluate(row["onnx"], graph, x.numpy()[None])[0]
        assert np.allclose(reference, y.numpy(), rtol=1e-5, atol=1e-6)
        assert prop.is_counterexample(x, torch.from_numpy(reference))
    return verdict.status, verdict


def _agrees(status: str, expected: str) -> bool:
    return status in ("unknown", "timeout") or expected not in ("sat", "unsat") or status == expected


@pytest.mark.parametrize("row", benchmark_instances("test"), ids=lambda r: r["onnx"].split("/")[-1])
def test_test_suite_never_contradicts(row, benchmarks):
    status, _ = _run(row, timeout=20)
    assert _agrees(status, row["expected"]), (status, row["expected"])
    if row["onnx"].endswith(("test_nano.onnx", "test_tiny.onnx", "test_small.onnx")):
        assert status == "unsat"  # intervals alone decide these tiny nets
    if row["expected"] == "sat":
        assert status == "sat"


def test_acasxu_sample_never_contradicts(benchmarks):
    wanted = set(ACAS_SAMPLE)
    rows = [r for r in benchmark_instances("acasxu")
            if (r["onnx"].split("/")[-1], r["vnnlib"].split("/")[-1]) in wanted]
    assert len(rows) == len(ACAS_SAMPLE)
    statuses = {}
    for row in rows:
        status, _ = _run(row, timeout=10)
        statuses[(row["onnx"].split("/")[-1], row["vnnlib"].split("/")[-1])] = status
        assert _agrees(status, row["expected"]), (row, status)
    assert statuses[("ACASXU_run2a_2_1_batch_2000.onnx", "prop_2.vnnlib")] == "sat"


def test_result_file_round_trip(tmp_path, benchmarks):
    row = next(r for r in benchmark_instances("test") if r["expected"] == "sat")
    status, verdict = _run(row, timeout=20)
    assert status == "sat"
    path = tmp_path / "out" / "result.txt"
    write_result(path, verdict)
    text = path.read_text()
    assert text.startswith("sat\n((X_0 ") and "(Y_4 " in text and text.rstrip().endswith(")")
    assert read_result(path) == "sat"
    values = [float(token.rstrip(")")) for token in text.split() if token[0] not in "(s"]
    assert np.allclose(values[:5], verdict.counterexample[0].numpy())
    assert format_result(type(verdict)("unsat")) == "unsat\n"
