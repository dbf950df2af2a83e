"""Finding the counterexamples that exist: pinned inputs and output bands, clauses that bounds show
violated everywhere, the attack's share on a large conv net, reproducible seeds, and the deadline
held inside a bound pass."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BENCHMARKS
from netgen import cnn, mlp
from verikit.api import load_model, load_spec
from verikit.methods.pgd import PGD, PGDOptions
from verikit.onnx_runtime import evaluate
from verikit.pipeline import VerifyOptions, verify
from verikit.plugins import get_method
from verikit.region import Box
from verikit.spec.property import RegionSpec
from verikit.spec.vnnlib import write_vnnlib

RESNET = BENCHMARKS / "cifar10_resnet"
ACAS = BENCHMARKS / "acasxu"


def _vnnlib(lower, upper, clause_rows: list[str], outputs: int) -> str:
    """A one-box spec: the box, and one clause (an AND of the given comparisons)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(outputs)]
    for i, (low, high) in enumerate(zip(lower, upper)):
        lines += [f"(assert (>= X_{i} {low!r}))", f"(assert (<= X_{i} {high!r}))"]
    lines.append(f"(assert (and {' '.join(clause_rows)}))")
    return "\n".join(lines) + "\n"


def _checked(model: Path, prop, verdict) -> torch.Tensor:
    """The counterexample's input, after checking it as VNN-COMP would (box in float64, onnxruntime)."""
    assert verdict.status == "sat", (verdict.status, verdict.detail)
    x, _ = verdict.counterexample
    graph = load_model(model)
    y = torch.from_numpy(evaluate(model, graph, x.numpy()[None])[0])
    assert prop.is_counterexample(x, y)
    return x


@pytest.fixture
def pinned_cnn(tmp_path):
    """A small conv net and a box pinning 60 of its 64 inputs to 5-decimal values float32 cannot hold."""
    model = cnn(tmp_path / "cnn.onnx", "MaxPool", batchnorm=True, seed=11)
    rng = np.random.default_rng(0)
    center = np.round(rng.uniform(-1, 1, 64), 5)
    lower, upper = center.copy(), center.copy()
    lower[:4], upper[:4] = center[:4] - 0.05, center[:4] + 0.05
    graph = load_model(model)
    with torch.no_grad():
        y0 = float(graph.to(torch.float64).forward_flat(torch.from_numpy(center)[None])[0, 0])
    return model, lower.tolist(), upper.tolist(), y0


def test_pinned_inputs_and_an_output_band_around_the_centre_are_sat(pinned_cnn, tmp_path):
    model, lower, upper, y0 = pinned_cnn
    spec = tmp_path / "band.vnnlib"
    spec.write_text(_vnnlib(lower, upper, [f"(>= Y_0 {y0 - 0.01!r})", f"(<= Y_0 {y0 + 0.01!r})"], 3))
    graph = load_model(model)
    prop = load_spec(spec, graph)
    x = _checked(model, prop, verify(graph, prop, VerifyOptions(timeout=20, workers=1)))
    assert np.array_equal(x.numpy()[4:], np.array(lower[4:]))  # the spec's own pinned values, reported


def test_pinned_inputs_and_an_unreachable_band_are_unsat(pinned_cnn, tmp_path):
    model, lower, upper, y0 = pinned_cnn
    spec = tmp_path / "far.vnnlib"
    spec.write_text(_vnnlib(lower, upper, [f"(>= Y_0 {y0 + 50.0!r})", f"(<= Y_0 {y0 + 51.0!r})"], 3))
    graph = load_model(model)
    assert verify(graph, load_spec(spec, graph), VerifyOptions(timeout=20, workers=1)).status == "unsat"


def test_a_clause_bounds_show_violated_everywhere_is_sat_without_an_attack(tmp_path):
    model = mlp(tmp_path / "net.onnx", "Relu", widths=(6,), inputs=3, outputs=2, seed=4)
    graph = load_model(model)
    box = Box(torch.full((1, 3), -0.1, dtype=torch.float64), torch.full((1, 3), 0.1, dtype=torch.float64))
    bound = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # Y_0 <= (a number above its upper bound)
    ceiling = float(get_method("ibp").bound(graph, box.to(torch.float32), bound.float()[None]).upper[0, 0]) + 0.5
    spec = tmp_path / "everywhere.vnnlib"
    spec.write_text(_vnnlib([-0.1] * 3, [0.1] * 3, [f"(<= Y_0 {ceiling!r})"], 2))
    prop = load_spec(spec, graph)
    verdict = verify(graph, prop, VerifyOptions(timeout=20, workers=1, attack=None, complete=None))
    _checked(model, prop, verdict)
    assert verdict.method == "ibp" and "every point" in verdict.detail


def _widened(spec_path: Path, graph, factor: float, out: Path) -> Path:
    """The spec's box widened `factor` times around its centre."""
    prop = load_spec(spec_path, graph)
    box = prop.regions[0].region
    center, half = (box.lower + box.upper) / 2, (box.upper - box.lower) / 2
    region = RegionSpec(Box(center - factor * half, center + factor * half), prop.regions[0].clauses)
    write_vnnlib(dataclasses.replace(prop, regions=(region,)), out)
    return out


def test_the_attack_gets_its_share_on_a_resnet(tmp_path, benchmarks):
    # three times the competition's box: a signed-gradient step from its centre finds a counterexample
    model = RESNET / "onnx" / "resnet_2b.onnx"
    graph = load_model(model)
    original = RESNET / "vnnlib_properties_pgd_filtered" / "resnet2b_pgd_filtered" / "prop_0_eps_0.008.vnnlib"
    prop = load_spec(_widened(original, graph, 3.0, tmp_path / "wide.vnnlib"), graph)
    verdict = verify(graph, prop, VerifyOptions(timeout=30, workers=1))
    _checked(model, prop, verdict)
    assert verdict.method == "pgd"


def test_the_deadline_holds_inside_a_bound_pass_on_the_largest_conv_net(benchmarks):
    model = RESNET / "onnx" / "resnet_4b.onnx"
    graph = load_model(model)
    prop = load_spec(RESNET / "vnnlib_properties_pgd_filtered" / "resnet4b_pgd_filtered" / "prop_0_eps_0.004.vnnlib",
                     graph)
    started = time.monotonic()
    verdict = verify(graph, prop, VerifyOptions(timeout=3, workers=1))
    assert verdict.status == "timeout"
    assert time.monotonic() - started < 3 + 4  # generous: benchmarks/README.md has the measured overrun


def test_the_same_seed_repeats_the_attack(tmp_path):
    graph = load_model(mlp(tmp_path / "net.onnx", "Relu", widths=(16, 16), inputs=4, outputs=3, seed=2))
    prop = load_spec(_threshold_spec(graph, tmp_path), graph)
    found = [PGD().attack(graph, prop, PGDOptions(), None, seed=seed) for seed in (7, 7, 8)]
    assert all(f is not None for f in found)
    assert torch.equal(found[0][0], found[1][0]) and not torch.equal(found[0][0], found[2][0])


def _threshold_spec(graph, folder: Path) -> Path:
    """Y_0 >= its 98th percentile over [-1, 1]^n (sampled): sat, and rare enough to need the descent."""
    with torch.no_grad():
        values = graph.to(torch.float64).forward_flat(torch.rand(4096, graph.input_size, dtype=torch.float64) * 2 - 1)
    threshold = float(values[:, 0].quantile(0.98))
    path = folder / "threshold.vnnlib"
    path.write_text(_vnnlib([-1.0] * graph.input_size, [1.0] * graph.input_size, [f"(>= Y_0 {threshold!r})"],
                            graph.output_size))
    return path


def test_acasxu_1_9_prop_7_is_found_every_time(benchmarks):
    # sat, with counterexamples rare in its large box: thousands of starts in rounds find one
    model = ACAS / "ACASXU_run2a_1_9_batch_2000.onnx"
    graph = load_model(model)
    prop = load_spec(ACAS / "prop_7.vnnlib", graph)
    for seed in (0, 1):
        _checked(model, prop, verify(graph, prop, VerifyOptions(timeout=30, workers=1, seed=seed)))
