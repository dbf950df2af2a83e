"""Branch and bound (input splitting): complete answers that agree with brute force on small nets and
with the known answers on real ACAS Xu instances, in one process or a pool of workers over pieces that
cover the box; `timeout`, never a guess, at the deadline."""
from __future__ import annotations

import time

import pytest
import torch

from conftest import BENCHMARKS
from netgen import mlp
from verikit.api import load_model, load_spec
from verikit.methods.bab import BaBOptions, BranchAndBound, InputSplitOptions
from verikit.region import Box
from verikit.spec.property import OutputClause, Property, RegionSpec


def _threshold_property(graph, threshold: float) -> Property:
    """Unsafe iff Y_0 >= threshold over [-1, 1]^n."""
    n = graph.input_size
    clause = OutputClause(torch.tensor([[-1.0] + [0.0] * (graph.output_size - 1)], dtype=torch.float64),
                          torch.tensor([-threshold], dtype=torch.float64))
    region = Box(-torch.ones(1, n, dtype=torch.float64), torch.ones(1, n, dtype=torch.float64))
    return Property(n, graph.output_size, (RegionSpec(region, (clause,)),))


def _grid_max(graph) -> float:
    axis = torch.linspace(-1, 1, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        return float(graph.to(torch.float64).forward_flat(grid)[:, 0].max())


@pytest.mark.parametrize("seed,activation", [(0, "Relu"), (1, "Relu"), (2, "Relu"), (3, "LeakyRelu"),
                                             (4, "Sigmoid"), (5, "Tanh")])
def test_agrees_with_brute_force_on_small_nets(tmp_path, seed, activation):
    graph = load_model(mlp(tmp_path / f"net{seed}.onnx", activation, widths=(12, 12), inputs=2, outputs=2, seed=seed))
    _assert_agrees_with_brute_force(graph, BaBOptions(inputs=InputSplitOptions(batch=64)))


def _assert_agrees_with_brute_force(graph, options: BaBOptions):
    """`unsat` just above the grid maximum of Y_0, `sat` with a real point just below; returns the unsat."""
    top = _grid_max(graph)
    above = BranchAndBound().decide(graph, _threshold_property(graph, top + 0.05), options, time.monotonic() + 60)
    assert above.status == "unsat"
    below = BranchAndBound().decide(graph, _threshold_property(graph, top - 0.05), options, time.monotonic() + 60)
    assert below.status == "sat"
    x, y = below.counterexample
    assert float(y[0]) >= top - 0.05 and bool((x.abs() <= 1).all())
    return above


def test_proves_a_real_acasxu_property(benchmarks):
    graph = load_model(BENCHMARKS / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx")
    prop = load_spec(BENCHMARKS / "acasxu" / "prop_1.vnnlib", graph)
    verdict = BranchAndBound().decide(graph, prop, None, time.monotonic() + 60)
    assert verdict.status == "unsat"


def test_deadline_gives_timeout_not_a_guess(benchmarks):
    graph = load_model(BENCHMARKS / "acasxu" / "ACASXU_run2a_3_3_batch_2000.onnx")
    prop = load_spec(BENCHMARKS / "acasxu" / "prop_2.vnnlib", graph)  # unsat, needs ~10^5 splits
    verdict = BranchAndBound().decide(graph, prop, None, time.monotonic() + 1.0)
    assert verdict.status == "timeout"


def test_input_splitting_without_forward_mode(tmp_path):
    """A 16-input net with max pooling (no forward-mode bounds): input splitting still agrees with
    sampling, through its fallback split score."""
    from netgen import NetBuilder

    net = NetBuilder((1, 1, 4, 4), seed=3)
    net.conv(2, kernel=2, stride=1, pad=0)
    net.op("Relu")
    net.pool("MaxPool", kernel=2, stride=1)
    net.flatten()
    net.gemm(2)
    graph = load_model(net.save(tmp_path / "maxpool.onnx"))
    points = torch.rand(20000, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        top = float(graph.to(torch.float64).forward_flat(points)[:, 0].max())
    method = BranchAndBound()
    assert method.decide(graph, _threshold_property(graph, top + 0.3), None, time.monotonic() + 60).status == "unsat"
    below = method.decide(graph, _threshold_property(graph, top - 0.05), None, time.monotonic() + 60)
    assert below.status == "sat" and float(below.counterexample[1][0]) >= top - 0.05


def test_a_pool_of_workers_agrees_with_one_process(tmp_path, monkeypatch):
    import verikit.methods.bab as bab

    monkeypatch.setattr(bab, "POOL_AFTER", 0.0)  # to the pool at once (a small net is decided alone in 2 s)
    graph = load_model(mlp(tmp_path / "net.onnx", "Relu", widths=(12, 12), inputs=2, outputs=2, seed=1))
    above = _assert_agrees_with_brute_force(graph, BaBOptions(workers=2, inputs=InputSplitOptions(batch=64)))
    assert "in 2 workers" in above.detail


def test_open_boxes_dealt_again_round_after_round_agree_with_one_process(tmp_path, monkeypatch):
    # 0 s a part: every part goes back after one batch, and the open boxes are dealt again each round
    import verikit.methods.bab as bab

    monkeypatch.setattr(bab, "PART_SECONDS", 0.0)
    monkeypatch.setattr(bab, "POOL_AFTER", 0.0)
    graph = load_model(mlp(tmp_path / "net.onnx", "Relu", widths=(12, 12), inputs=2, outputs=2, seed=1))
    for margin in (0.005, -0.02):  # just above the grid maximum: a few rounds; below it: a real point
        prop = _threshold_property(graph, _grid_max(graph) + margin)
        small = InputSplitOptions(batch=4)
        alone = BranchAndBound().decide(graph, prop, BaBOptions(inputs=small), time.monotonic() + 60)
        pooled = BranchAndBound().decide(graph, prop, BaBOptions(workers=2, inputs=small), time.monotonic() + 60)
        assert pooled.status == alone.status == ("unsat" if margin > 0 else "sat"), (alone, pooled)
        if pooled.status == "sat":
            assert prop.is_counterexample(*pooled.counterexample)
        else:
            assert int(pooled.detail.split("2 workers, ")[1].split(" rounds")[0]) > 1, pooled.detail


def test_dealt_parts_hold_every_open_box_once():
    from verikit.methods.bab import _Boxes

    lower = torch.rand(11, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    domains = _Boxes(lower, lower + 1, torch.rand(11, 2, generator=torch.Generator().manual_seed(1)) > 0.5)
    parts = domains.deal(4)
    assert len(parts) == 4 and sorted(len(part) for part in parts) == [2, 3, 3, 3]
    rows = torch.cat([torch.cat([p.lower, p.upper, p.open.double()], 1) for p in parts])
    original = torch.cat([domains.lower, domains.upper, domains.open.double()], 1)
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, original.tolist()))
    assert len(domains.deal(20)) == 11


def test_a_pool_of_workers_times_out_at_the_deadline(benchmarks):
    graph = load_model(BENCHMARKS / "acasxu" / "ACASXU_run2a_3_3_batch_2000.onnx")
    prop = load_spec(BENCHMARKS / "acasxu" / "prop_2.vnnlib", graph)
    start = time.monotonic()
    verdict = BranchAndBound().decide(graph, prop, BaBOptions(workers=2), start + 6.0)
    assert verdict.status == "timeout"
    assert time.monotonic() - start < 30.0  # a guard against workers that ignore the deadline (hang)
