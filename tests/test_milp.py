"""The `milp` method: exact optima on tiny ReLU networks of every piecewise-linear family (inside every
incomplete bound, above every sampled or gradient-attacked value, attained at its own argmin/argmax),
complete decisions that agree with dense sampling, the VNN-COMP `test` suite without contradictions,
and unknown / timeout (never a guess) when it cannot decide."""
from __future__ import annotations

import time

import pytest
import torch

from conftest import benchmark_instances
from netgen import every_family, mlp
from test_lp import tiny_net
from verikit.api import load_model, load_spec
from verikit.lp.encode import F64
from verikit.methods.lp import encoding_bounds
from verikit.methods.lp import DualLP
from verikit.methods.milp import MILP, MILPOptions
from verikit.plugins import get_method
from verikit.region import Box, LpBall
from verikit.spec.property import InputConstraints, OutputClause, Property, RegionSpec
from verikit.pipeline import VerifyOptions, verify

# family -> box radius leaving 10 to 30 unstable ReLUs under CROWN's bounds
TINY = {"relu-mlp": 0.3, "leaky-mlp": 0.3, "cnn-avgpool-bn": 0.03, "cnn-maxpool": 0.02,
        "residual-identity": 0.005, "residual-projection": 0.02}


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    return {name: load_model(path).to(F64) for name, path in every_family(tmp_path_factory.mktemp("milp")).items()}


def tiny_region(graph, radius: float) -> Box:
    center = torch.rand(1, graph.input_size, generator=torch.Generator().manual_seed(2), dtype=F64) * 2 - 1
    return Box(center - radius, center + radius)


def unstable_relus(graph, region) -> int:
    intermediate = {}
    encoding_bounds(graph, region, torch.zeros(1, 1, graph.output_size, dtype=F64), "adaptive", intermediate)
    return sum(int(((b.lower < 0) & (b.upper > 0)).sum()) for b in intermediate.values())


def attacked_extremes(graph, region, row: torch.Tensor, steps: int = 40) -> tuple[float, float]:
    """Min and max of row . output over 4000 samples and signed-gradient descent / ascent from 64 of them."""
    samples = region.sample(4000, torch.Generator().manual_seed(3))[0]
    x = samples[:64].reshape(2, 32, -1).clone()
    signs = torch.tensor([-1.0, 1.0], dtype=F64).reshape(2, 1)
    step = 0.05 * (region.upper - region.lower)[0]
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(((graph.forward_flat(x.reshape(64, -1)) @ row).reshape(2, 32) * signs).sum(), x)
        x = region.project((x + step * grad.sign()).reshape(1, 64, -1)).reshape(x.shape).detach()
    with torch.no_grad():
        values = torch.cat([graph.forward_flat(samples), graph.forward_flat(x.reshape(64, -1))]) @ row
    return float(values.min()), float(values.max())


@pytest.mark.parametrize("family", list(TINY))
def test_milp_optimum_is_exact_on_tiny_networks(networks, family):
    graph = networks[family]
    region = tiny_region(graph, TINY[family])
    assert 10 <= unstable_relus(graph, region) <= 30  # the premise: a tiny MILP, with binaries
    row = torch.zeros(graph.output_size, dtype=F64)
    row[0], row[1] = 1.0, -1.0
    low, high = MILP().minimize(graph, region, row), MILP().minimize(graph, region, -row)
    exact = (low.value, -high.value)
    for name in ("ibp", "fast-lin", "crown", "dual-lp"):
        rows = row.reshape(1, 1, -1)
        other = get_method(name).bound(graph, region, rows.float() if name == "ibp" else rows)
        assert float(other.lower) - 1e-6 <= exact[0] and exact[1] <= float(other.upper) + 1e-6, (family, name)
    sampled = attacked_extremes(graph, region, row)
    assert exact[0] <= sampled[0] + 1e-7 and sampled[1] <= exact[1] + 1e-7, (family, exact, sampled)
    for optimum, value in ((low, exact[0]), (high, exact[1])):
        assert optimum.status == "optimal" and bool(region.contains(optimum.x[None, None], 1e-9)[0, 0])
        assert optimum.bound == pytest.approx(optimum.value, abs=1e-5)
        with torch.no_grad():
            assert float(graph.forward_flat(optimum.x[None])[0] @ row) == pytest.approx(value, abs=1e-5)


def test_bound_gives_exact_extremes_of_every_row(networks):
    graph = networks["relu-mlp"]
    region = tiny_region(graph, 0.3)
    rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
    exact = get_method("milp").bound(graph, region, rows)
    crown = get_method("crown").bound(graph, region, rows)
    for k in range(graph.output_size):
        low, high = attacked_extremes(graph, region, rows[0, k])
        assert exact.lower[0, k] <= low + 1e-7 and high <= exact.upper[0, k] + 1e-7
        assert exact.lower[0, k] >= crown.lower[0, k] - 1e-6 and exact.upper[0, k] <= crown.upper[0, k] + 1e-6
        highest = -MILP().minimize(graph, region, -rows[0, k]).value
        assert highest == pytest.approx(float(exact.upper[0, k]), abs=1e-6)


def test_hand_computed_milp_bounds(tmp_path):
    # y = 2 relu(x1 + x2 + 0.5) - relu(x1 - x2) + 0.25 on [-1, 1]^2: the triangle LP gives [-1.5, 5.25];
    # the true minimum is -1.25 (x2 = -1, x1 = 0.5: the first ReLU just off, the second at 1.5).
    graph = load_model(tiny_net(tmp_path / "tiny.onnx"))
    region = Box(-torch.ones(1, 2), torch.ones(1, 2))
    exact = MILP().bound(graph, region, torch.ones(1, 1, 1))
    assert exact.lower.item() == pytest.approx(-1.25, abs=1e-7) and exact.upper.item() == pytest.approx(5.25, abs=1e-7)
    assert DualLP().bound(graph, region, torch.ones(1, 1, 1)).lower.item() == pytest.approx(-1.5, abs=1e-7)


def margin_property(region, rows: list[tuple[list[float], float]] | list[list[tuple[list[float], float]]],
                    constraints: InputConstraints | None = None) -> Property:
    """One region; each clause is a list of (c, d) rows meaning c . y <= d."""
    clauses = tuple(OutputClause(torch.tensor([c for c, _ in clause], dtype=F64),
                                 torch.tensor([d for _, d in clause], dtype=F64)) for clause in rows)
    n_out = clauses[0].coefficients.shape[1]
    return Property(region.lower.shape[1], n_out, (RegionSpec(region, clauses, constraints),))


def test_decisions_agree_with_dense_sampling(tmp_path):
    outcomes = []
    for seed in range(4):
        graph = load_model(mlp(tmp_path / f"r{seed}.onnx", "Relu", (6, 6), inputs=3, outputs=2, seed=seed)).to(F64)
        center = torch.rand(1, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)
        region = Box(center - 0.5, center + 0.5)
        points = region.sample(20000, torch.Generator().manual_seed(seed))[0]
        with torch.no_grad():
            margins = (graph.forward_flat(points) @ torch.tensor([1.0, -1.0], dtype=F64))
        lowest = float(margins.min())
        for threshold in (lowest - 0.05, lowest + 1e-3):
            prop = margin_property(region, [[([1.0, -1.0], threshold)]])
            verdict = MILP().decide(graph, prop)
            outcomes.append(verdict.status)
            if verdict.status == "sat":
                x, y = verdict.counterexample
                with torch.no_grad():
                    assert torch.allclose(graph.forward_flat(x[None])[0], y)
                assert prop.is_counterexample(x, y)
            else:
                assert verdict.status == "unsat" and lowest > threshold
    assert outcomes.count("sat") >= 4 and "unsat" in outcomes, outcomes


def test_clauses_rows_and_input_constraints(tmp_path):
    graph = load_model(mlp(tmp_path / "c.onnx", "Relu", (6, 6), inputs=3, outputs=2, seed=5)).to(F64)
    region = Box(torch.zeros(1, 3, dtype=F64), torch.ones(1, 3, dtype=F64))
    low = MILP().minimize(graph, region, torch.tensor([1.0, 0.0], dtype=F64))
    high = MILP().minimize(graph, region, torch.tensor([-1.0, 0.0], dtype=F64))
    y0_min, y0_max = low.value, -high.value
    impossible = [([1.0, 0.0], y0_min - 0.01)]
    assert MILP().decide(graph, margin_property(region, [impossible])).status == "unsat"
    # an OR of an impossible clause and a possible one is sat; an AND of both rows is not
    possible = [([-1.0, 0.0], -(y0_max - 0.01))]
    assert MILP().decide(graph, margin_property(region, [impossible, possible])).status == "sat"
    assert MILP().decide(graph, margin_property(region, [impossible + possible])).status == "unsat"
    # the input constraint x0 + x1 + x2 <= 0 leaves only the corner x = 0, whose output is known
    corner = InputConstraints(torch.ones(1, 3, dtype=F64), torch.zeros(1, dtype=F64))
    with torch.no_grad():
        y_corner = float(graph.forward_flat(torch.zeros(1, 3, dtype=F64))[0, 0])
    near = margin_property(region, [[([1.0, 0.0], y_corner + 1e-3)]], corner)
    verdict = MILP().decide(graph, near)
    assert verdict.status == "sat" and float(verdict.counterexample[0].abs().max()) < 1e-6
    assert MILP().decide(graph, margin_property(region, [[([1.0, 0.0], y_corner - 1e-3)]], corner)).status == "unsat"


def test_undecidable_cases_are_unknown_or_timeout_never_a_guess(networks):
    graph = networks["relu-mlp"]
    region = tiny_region(graph, 0.3)
    prop = margin_property(region, [[([1.0, 0.0, 0.0], -100.0)]])
    late = MILP().decide(graph, prop, MILPOptions(), deadline=time.monotonic() - 1)
    assert late.status == "timeout" and "undecided" in late.detail
    assert MILP().decide(graph, prop).status == "unsat"
    l2 = LpBall(region.center, torch.tensor([0.1], dtype=F64), 2.0)
    verdict = MILP().decide(graph, Property(4, 3, (RegionSpec(l2, prop.regions[0].clauses),)))
    assert verdict.status == "unknown" and "L2 ball" in verdict.detail
    sigmoid = networks["sigmoid-mlp"]
    verdict = MILP().decide(sigmoid, margin_property(tiny_region(sigmoid, 0.1), [[([1.0, 0.0, 0.0], -100.0)]]))
    assert verdict.status == "unknown" and "no exact MILP encoding" in verdict.detail


@pytest.mark.parametrize("row", benchmark_instances("test"), ids=lambda r: r["onnx"].split("/")[-1])
def test_vnncomp_test_suite_with_ibp_then_milp(row, benchmarks):
    graph = load_model(row["onnx"])
    prop = load_spec(row["vnnlib"], graph)
    verdict = verify(graph, prop, VerifyOptions(timeout=60, methods=("ibp",), attack=None, complete="milp"))
    assert verdict.status == row["expected"], (verdict.status, verdict.detail)
    if verdict.method != "milp":  # intervals decided it: milp must decide it too on its own
        alone = MILP().decide(graph, prop, None, time.monotonic() + 60)
        assert alone.status == row["expected"], alone.detail


def test_registered_as_complete_method():
    method = get_method("milp")
    assert isinstance(method, MILP) and method.kind == "complete" and "encode_lp" in method.needs
    assert get_method("dual-lp").kind == get_method("lp-full").kind == "bound"
