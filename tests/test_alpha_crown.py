"""alpha-CROWN: sound on random ReLU / LeakyReLU / sigmoid / tanh MLPs and a CNN (sampled and gradient-attacked points,
boxes and balls), never looser than CROWN with the same intermediate bounds and tighter on average,
optimal on a hand-solved net, and sound with beta-CROWN split multipliers on a split domain; the
neuron-by-neuron tightening of intermediate bounds is sound and never looser than CROWN's."""
from __future__ import annotations

import pytest
import torch

from netgen import cnn, mlp
from test_backward import attacked_outputs, tiny_net
from verikit.bounds import Interval
from verikit.methods.alpha_crown import (AlphaCrown, AlphaCrownOptions, fold, optimize_folded,
                                        tighten_each_neuron)
from verikit.methods.linear_relaxation import Crown, LinearRelaxationOptions
from verikit.onnx_import import load_model
from verikit.plugins import get_method
from verikit.propagate.backward import layer_bounds, values_to_relax
from verikit.region import Box, LpBall

F64 = torch.float64


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alpha")
    paths = {"relu-mlp": mlp(folder / "relu.onnx", "Relu", (12, 12, 12), inputs=5, outputs=4, seed=21),
             "leaky-mlp": mlp(folder / "leaky.onnx", "LeakyRelu", (12, 12), inputs=5, outputs=4, seed=22),
             "cnn": cnn(folder / "cnn.onnx", "AveragePool", True, seed=23),
             "sigmoid-mlp": mlp(folder / "sigmoid.onnx", "Sigmoid", (12, 12, 12), inputs=5, outputs=4, seed=24),
             "tanh-mlp": mlp(folder / "tanh.onnx", "Tanh", (12, 12), inputs=5, outputs=4, seed=25)}
    return {name: load_model(path).to(F64) for name, path in paths.items()}


def regions(n: int):
    """Two problems per region: a box and an L2 ball."""
    center = torch.rand(2, n, generator=torch.Generator().manual_seed(5), dtype=F64) * 2 - 1
    yield "box", Box(center - 0.25, center + 0.25)
    yield "l2", LpBall(center, torch.tensor([0.5, 0.8], dtype=F64), 2.0)


def rows_for(graph) -> torch.Tensor:
    """The outputs and their pairwise differences (robustness margins)."""
    k = graph.output_size
    eye = torch.eye(k, dtype=F64)
    margins = [eye[i] - eye[j] for i in range(k) for j in range(k) if i != j][:6]
    return torch.cat([eye, torch.stack(margins)]).unsqueeze(0)


@pytest.mark.parametrize("family", ["relu-mlp", "leaky-mlp", "cnn", "sigmoid-mlp", "tanh-mlp"])
@pytest.mark.parametrize("optimize_intermediate", [False, True])
def test_sound_and_never_looser_than_crown(networks, family, optimize_intermediate):
    graph = networks[family]
    rows = rows_for(graph)
    options = AlphaCrownOptions(dtype="float64", optimize_intermediate=optimize_intermediate)
    gains = []
    for name, region in regions(graph.input_size):
        crown = Crown().bound(graph, region, rows, LinearRelaxationOptions(dtype="float64"))
        intermediate = {}
        alpha = AlphaCrown().bound(graph, region, rows, options, intermediate)
        assert intermediate, name
        assert bool((alpha.lower >= crown.lower - 1e-9).all()), f"{family}/{name}: lower below crown's"
        assert bool((alpha.upper <= crown.upper + 1e-9).all()), f"{family}/{name}: upper above crown's"
        gains.append(float((alpha.lower - crown.lower).mean() + (crown.upper - alpha.upper).mean()))
        for problem in range(region.batch):
            single = region.select(slice(problem, problem + 1))
            points = single.sample(2000, torch.Generator().manual_seed(problem))[0]
            with torch.no_grad():
                sampled = graph.forward_flat(points)
            outputs = torch.cat([sampled, attacked_outputs(graph, single, steps=15)])
            values = outputs @ rows[0].T
            bound = Interval(alpha.lower[problem], alpha.upper[problem])
            assert bound.contains(values, 1e-9), f"{family}/{name}/problem {problem}: a value escapes"
    assert sum(gains) / len(gains) > 1e-3, gains  # strictly tighter on average


def test_reaches_the_hand_computed_optimum(tmp_path):
    # tiny_net over [-1, 1]^2 (see test_backward): the lower bound with lower slope a on h1 is
    # min over the box of (2a - 0.5) x1 + (2a + 0.5) x2 + a - 0.75, largest (-1.5) at a = 0.25,
    # against CROWN's -3.75 (a = 1); the upper bound 5.25 does not depend on the slopes.
    graph = load_model(tiny_net(tmp_path / "tiny.onnx"))
    region = Box(-torch.ones(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64))
    options = AlphaCrownOptions(dtype="float64", intersect_ibp=False, steps=60, optimize_intermediate=False)
    result = get_method("alpha-crown").bound(graph, region, torch.ones(1, 1, 1, dtype=F64), options)
    assert -1.56 <= float(result.lower) <= -1.5 + 1e-9
    assert abs(float(result.upper) - 5.25) < 1e-9


def test_beta_multipliers_are_sound_on_a_split_domain(networks):
    # Fix one unstable first-layer neuron active (lower = 0): the bound with optimised betas must hold
    # on every sampled point of the region where that neuron is indeed non-negative, and be no looser
    # than CROWN's (the first step: slopes adaptive, betas 0).
    graph = networks["relu-mlp"]
    region = Box(torch.full((1, 5), -0.5, dtype=F64), torch.full((1, 5), 0.5, dtype=F64))
    with torch.no_grad():
        bounds = layer_bounds(graph, region, "adaptive", {})
    first = graph.nodes[0].output
    unstable = ((bounds[first].lower < 0) & (bounds[first].upper > 0)).flatten().nonzero()[:, 0]
    neuron = int(unstable[0])
    lower = bounds[first].lower.flatten(1).clone()
    lower[0, neuron] = 0.0
    split = {first: Interval(lower.reshape(bounds[first].lower.shape), bounds[first].upper)}
    with torch.no_grad():
        bounds = layer_bounds(graph, region, "adaptive", split, reference=split)
    rows = rows_for(graph)[0]
    folded_region, folded_bounds = fold(graph, region, bounds, torch.zeros(len(rows), dtype=torch.long))
    signs = {first: (folded_bounds[first].lower >= 0).to(F64)}
    options = AlphaCrownOptions(dtype="float64", steps=30)
    folded_rows = rows.reshape(len(rows), 1, *graph.output_shape)
    with_beta = optimize_folded(graph, folded_region, folded_rows, folded_bounds, options, split_signs=signs)
    crown = optimize_folded(graph, folded_region, folded_rows, folded_bounds, AlphaCrownOptions(steps=1))
    assert bool((with_beta >= crown - 1e-9).all()) and float((with_beta - crown).max()) > 1e-3
    points = region.sample(20000, torch.Generator().manual_seed(3))[0]
    with torch.no_grad():
        values = graph.forward(points, keep_all=True)
    inside = values[first].flatten(1)[:, neuron] >= 0
    assert int(inside.sum()) > 100
    margins = values[graph.output_name].flatten(1)[inside] @ rows.T
    assert bool((margins >= with_beta - 1e-9).all())


def test_problems_past_their_stop_leave_the_ascent_without_changing_the_others(networks):
    # Branch and bound stops each (domain, row) problem once its bound passes the row's threshold; the
    # problems are independent, so the others must end exactly where a full ascent ends them, with the
    # same recorded coefficients, and the stopped ones above their threshold.
    graph = networks["relu-mlp"]
    region = Box(torch.full((1, 5), -0.5, dtype=F64), torch.full((1, 5), 0.5, dtype=F64))
    with torch.no_grad():
        bounds = layer_bounds(graph, region, "adaptive", {})
    rows = torch.cat([rows_for(graph)[0], -rows_for(graph)[0]])
    folded_region, folded_bounds = fold(graph, region, bounds, torch.zeros(len(rows), dtype=torch.long))
    folded_rows = rows.reshape(len(rows), 1, *graph.output_shape)
    options = AlphaCrownOptions(dtype="float64", steps=15)
    full_record, early_record = {}, {}
    full = optimize_folded(graph, folded_region, folded_rows, folded_bounds, options, full_record)
    crown = optimize_folded(graph, folded_region, folded_rows, folded_bounds, AlphaCrownOptions(steps=1))
    stop_at = torch.where(torch.arange(len(rows)) % 2 == 0, (crown + full) / 2, full + 1.0)  # half pass midway
    early = optimize_folded(graph, folded_region, folded_rows, folded_bounds, options, early_record, stop_at=stop_at)
    stopped = early > stop_at
    assert 0 < int(stopped.sum()) < len(rows)
    # the same problems in a batch of another shape: equal up to summation order, not bit for bit
    assert torch.allclose(early[~stopped], full[~stopped], rtol=1e-9, atol=1e-12)
    for name, coefficients in full_record.items():
        assert torch.allclose(early_record[name][~stopped], coefficients[~stopped], rtol=1e-9, atol=1e-12), name


def test_a_passed_deadline_stops_after_the_first_sound_step(networks):
    """With its deadline already passed, alpha-crown takes one step (CROWN's own slopes) and returns
    bounds between CROWN's and the fully optimised ones: anytime, and never unsound."""
    graph = networks["relu-mlp"]
    region = dict(regions(graph.input_size))["box"]
    rows = rows_for(graph)
    crown = Crown().bound(graph, region, rows, LinearRelaxationOptions(dtype="float64"))
    late = AlphaCrown().bound(graph, region, rows, AlphaCrownOptions(dtype="float64"), deadline=0.0)
    full = AlphaCrown().bound(graph, region, rows, AlphaCrownOptions(dtype="float64"))
    assert bool((late.lower >= crown.lower - 1e-9).all() and (late.lower <= full.lower + 1e-9).all())
    assert float((full.lower - late.lower).max()) > 1e-6  # the optimised steps were really skipped


def _attacked_values(graph, region, name: str, neurons: torch.Tensor, steps: int = 20) -> torch.Tensor:
    """Values of `name` at points pushed by signed gradient steps towards each given neuron's max and min."""
    signs = torch.cat([torch.ones(len(neurons)), -torch.ones(len(neurons))]).to(F64)
    columns = torch.cat([neurons, neurons])
    x = region.sample(len(columns), torch.Generator().manual_seed(3))[0]
    for _ in range(steps):
        x.requires_grad_(True)
        value = graph.forward(x, keep_all=True)[name].flatten(1)
        (grad,) = torch.autograd.grad((value[torch.arange(len(columns)), columns] * signs).sum(), x)
        x = region.project((x + 0.05 * grad.sign()).unsqueeze(0))[0].detach()
    with torch.no_grad():
        return graph.forward(x, keep_all=True)[name].flatten(1)


@pytest.mark.parametrize("family", ["relu-mlp", "leaky-mlp", "cnn", "sigmoid-mlp", "tanh-mlp"])
def test_neuron_by_neuron_tightening_is_sound_and_never_looser(networks, family):
    graph = networks[family]
    center = torch.rand(1, graph.input_size, generator=torch.Generator().manual_seed(7), dtype=F64) * 2 - 1
    region = Box(center - 0.3, center + 0.3)
    with torch.no_grad():
        crown = layer_bounds(graph, region, "adaptive", {})
    tightened = tighten_each_neuron(graph, region, crown, AlphaCrownOptions(dtype="float64"))
    points = region.sample(3000, torch.Generator().manual_seed(4))[0]
    with torch.no_grad():
        sampled = graph.forward(points, keep_all=True)
    gain = 0.0
    for name in values_to_relax(graph):
        before, after = crown[name], tightened[name]
        assert bool((after.lower >= before.lower - 1e-9).all() and (after.upper <= before.upper + 1e-9).all()), name
        gain += float((after.lower - before.lower).sum() + (before.upper - after.upper).sum())
        unstable = ((after.lower < 0) & (after.upper > 0)).flatten(1)[0].nonzero()[:, 0][:12]
        values = torch.cat([sampled[name].flatten(1), _attacked_values(graph, region, name, unstable)])
        flat = Interval(after.lower.flatten(1), after.upper.flatten(1))
        assert flat.contains(values, 1e-9), f"{family}/{name}: a value escapes the tightened bounds"
    if family in ("relu-mlp", "sigmoid-mlp"):  # three hidden layers: the later ones must gain
        assert gain > 1e-3, gain
