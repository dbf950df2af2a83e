"""Cases found outside the project (tests/data/regressions/README.md): inputs pinned to one value that
float32 cannot hold. verify must answer `sat` with a counterexample onnxruntime confirms, and no part
of branch and bound may refute a region on bounds that exclude its own float64 points."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import verikit.verdict as verdict_module
from verikit.api import load_model, load_spec
from verikit.lp.encode import select_problem
from verikit.methods.bab import BaBOptions
from verikit.methods.relu_probes import solve_leaf
from verikit.methods.relu_split import _Problem
from verikit.onnx_runtime import evaluate
from verikit.pipeline import VerifyOptions, verify
from verikit.region import Box, LpBall
from verikit.results import format_result

CASES = Path(__file__).parent / "data" / "regressions"
PINNED_CNN = CASES / "unsound-unsat-pinned"
PINNED_TINY = CASES / "pinned-sat-unconfirmed"


def _float32_only(prop, x):
    """The confirmation rule before the fix: every coordinate a float32 value (none inside a pinned box)."""
    return x.float().double()


def _confirmed_sat(model: Path, spec: Path, timeout: float = 30.0):
    graph = load_model(model)
    prop = load_spec(spec, graph)
    verdict = verify(graph, prop, VerifyOptions(timeout=timeout, workers=1))
    assert verdict.status == "sat", (verdict.status, verdict.detail)
    x, y = verdict.counterexample
    box = prop.regions[0].region
    assert bool(((x >= box.lower[0]) & (x <= box.upper[0])).all())  # in the box exactly, in float64
    reference = torch.from_numpy(evaluate(model, graph, x.numpy()[None])[0])
    assert prop.is_counterexample(x, reference)  # onnxruntime, on float32(x), with no tolerance
    return prop, x


@pytest.mark.parametrize("spec", ["s1.vnnlib", "s1_single.vnnlib", "s1_widened.vnnlib"])
def test_pinned_cnn_is_sat(spec):
    _confirmed_sat(PINNED_CNN / "m32_cnn.onnx", PINNED_CNN / spec)


def test_pinned_tiny_is_sat_and_reports_the_specs_own_values():
    prop, x = _confirmed_sat(PINNED_TINY / "m3_tiny.onnx", PINNED_TINY / "s1.vnnlib", timeout=20)
    box = prop.regions[0].region
    assert torch.equal(x, box.lower[0])  # both inputs pinned: the reported values are the spec's own
    text = format_result(verdict_module.Verdict("sat", counterexample=(x, torch.zeros(3))))
    assert "(X_0 0.61957)" in text and "(X_1 -0.37429)" in text


def test_witness_of_the_pinned_cnn_violates_the_spec():
    graph = load_model(PINNED_CNN / "m32_cnn.onnx")
    prop = load_spec(PINNED_CNN / "s1.vnnlib", graph)
    witness = torch.tensor(json.loads((PINNED_CNN / "info.json").read_text())["witness"], dtype=torch.float64)
    assert verdict_module.confirm(graph, prop, (witness, None), "test") is not None


def test_leaf_lp_keeps_a_pinned_region_open():
    # The root of the pinned CNN has every ReLU stable, so it is settled by the leaf LP; its bounds,
    # computed in float32, do not hold the float64 values of the pinned neurons exactly. Before they
    # were widened, the LP was infeasible and the region counted as refuted.
    graph = load_model(PINNED_CNN / "m32_cnn.onnx")
    spec = load_spec(PINNED_CNN / "s1_single.vnnlib", graph).regions[0]
    problem = _Problem(graph, spec, BaBOptions(), time.monotonic() + 30)
    bounds = problem._root_bounds()
    every = torch.ones(1, dtype=torch.bool)
    still_open, candidates = solve_leaf(problem.graph64, spec, select_problem(bounds, 0), every)
    assert bool(still_open[0]) and candidates


@pytest.mark.parametrize("model, spec", [(PINNED_CNN / "m32_cnn.onnx", PINNED_CNN / "s1.vnnlib"),
                                         (PINNED_TINY / "m3_tiny.onnx", PINNED_TINY / "s1.vnnlib")])
def test_no_unsat_even_when_no_counterexample_can_be_confirmed(model, spec, monkeypatch):
    # With confirmation unable to report a pinned value, branch and bound (ReLU splitting on the CNN,
    # input splitting on the two-input net, whose box is a single point) must end open, not refuted.
    monkeypatch.setattr(verdict_module, "reported_input", _float32_only)
    graph = load_model(model)
    verdict = verify(graph, load_spec(spec, graph), VerifyOptions(timeout=10, workers=1))
    assert verdict.status in ("unknown", "timeout"), (verdict.status, verdict.detail)


def test_narrowing_a_region_rounds_outward():
    lower = torch.tensor([[0.1, 0.53807, -0.37429, 1.0]], dtype=torch.float64)
    upper = torch.tensor([[0.1, 0.6, -0.37429, 1.0]], dtype=torch.float64)
    box = Box(lower, upper).to(torch.float32)
    assert box.lower.dtype == torch.float32
    assert bool((box.lower.double() <= lower).all() and (box.upper.double() >= upper).all())
    assert torch.equal(box.lower[0, 3], torch.tensor(1.0))  # exact values stay as they are
    ball = LpBall(lower, torch.tensor([0.01], dtype=torch.float64), norm=2.0)
    narrow = ball.to(torch.float32)
    points = ball.sample(500, torch.Generator().manual_seed(0))
    assert bool(narrow.to(torch.float64).contains(points).all())
    assert float((narrow.center.double() - lower).abs().max()) > 0  # the centre did move


def test_default_dtype_float64_does_not_leak_into_verikit():
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        graph = load_model(PINNED_TINY / "m3_tiny.onnx")
        prop = load_spec(PINNED_TINY / "s1.vnnlib", graph)
        verdict = verify(graph, prop, VerifyOptions(timeout=10, workers=1))
    finally:
        torch.set_default_dtype(default)
    assert verdict.status == "sat"
    assert np.isfinite(verdict.counterexample[1].numpy()).all()
