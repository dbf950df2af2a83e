"""ReLU-split branch and bound (the `bab` method on inputs larger than max_inputs): split domains' bounds
contain every point of the domain; never a wrong answer against the exact MILP optimum or verdict;
decides instances that CROWN alone cannot; handles several clauses of several rows, balls, LeakyReLU,
input constraints; says timeout / unknown at its limits."""
from __future__ import annotations

import time

import pytest
import torch

from netgen import mlp
from verikit.bounds import Interval
from verikit.methods.bab import BaBOptions, BranchAndBound
from verikit.methods.relu_split import ReluSplitOptions
from verikit.methods.linear_relaxation import Crown
from verikit.onnx_import import load_model
from verikit.plugins import get_method, registry
from verikit.propagate.backward import layer_bounds
from verikit.region import Box, LpBall
from verikit.spec.property import InputConstraints, OutputClause, Property, RegionSpec
from verikit.pipeline import VerifyOptions, verify

F64 = torch.float64
OPTIONS = BaBOptions(max_inputs=2)  # every test net has more inputs: ReLU splitting


def milp():
    """The exact `milp` method, or skip when it is not registered."""
    if "milp" not in {m.name for m in registry().methods("complete")}:
        pytest.skip("the milp method is not registered")
    return get_method("milp")


def one_row(graph, region, row: torch.Tensor, rhs: float, constraints=None) -> Property:
    clause = OutputClause(row.reshape(1, -1).to(F64), torch.tensor([rhs], dtype=F64))
    return Property(graph.input_size, graph.output_size, (RegionSpec(region, (clause,), constraints),))


def decide(graph, prop: Property, seconds: float = 20.0):
    return BranchAndBound().decide(graph, prop, OPTIONS, time.monotonic() + seconds)


def assert_confirmed(prop: Property, verdict) -> None:
    assert verdict.counterexample is not None
    x, y = verdict.counterexample
    assert prop.is_counterexample(x, y)


def box_around(seed: int, n: int, radius: float) -> Box:
    center = torch.rand(1, n, generator=torch.Generator().manual_seed(seed), dtype=F64) * 2 - 1
    return Box(center - radius, center + radius)


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu"])
def test_agrees_with_the_milp_optimum_where_crown_cannot_decide(tmp_path, activation):
    exact = milp()
    undecided_by_crown = 0
    for seed in range(3):
        path = mlp(tmp_path / f"n{seed}.onnx", activation, (12, 12), inputs=5, outputs=3, seed=40 + seed)
        graph = load_model(path)
        region = box_around(seed, 5, 0.4)
        row = torch.tensor([1.0, -1.0, 0.0], dtype=F64)
        optimum = exact.minimize(graph, region, row).value
        crown = float(Crown().bound(graph, region, row.reshape(1, 1, 3).float()).lower)
        gap = optimum - crown
        assert gap > 0
        below, above = optimum - 0.05 * gap, optimum + 0.05 * gap
        undecided_by_crown += crown < below
        unsafe_below = decide(graph, one_row(graph, region, row, below))  # no input reaches below the optimum
        assert unsafe_below.status == "unsat", (seed, unsafe_below)
        unsafe_above = decide(graph, one_row(graph, region, row, above))
        assert unsafe_above.status == "sat", (seed, unsafe_above)
        assert_confirmed(one_row(graph, region, row, above), unsafe_above)
    assert undecided_by_crown == 3


def test_clauses_of_several_rows_agree_with_milp(tmp_path):
    exact = milp()
    graph = load_model(mlp(tmp_path / "m.onnx", "Relu", (12, 12), inputs=6, outputs=3, seed=50))
    region = box_around(7, 6, 0.35)
    eye = torch.eye(3, dtype=F64)
    outputs = graph.to(F64).forward_flat(region.center).detach()[0]
    for shift in (-0.3, -0.1, 0.0, 0.1):
        # unsafe: (y0 - y1 <= d1 and y0 - y2 <= d2) or (y1 - y2 <= d3), thresholds near the centre's values
        both = OutputClause(torch.stack([eye[0] - eye[1], eye[0] - eye[2]]),
                            torch.stack([outputs[0] - outputs[1], outputs[0] - outputs[2]]) + shift - 0.2)
        other = OutputClause((eye[1] - eye[2]).reshape(1, 3), (outputs[1] - outputs[2]).reshape(1) + shift - 0.6)
        prop = Property(6, 3, (RegionSpec(region, (both, other)),))
        truth = exact.decide(graph, prop, None, time.monotonic() + 30).status
        verdict = decide(graph, prop)
        assert verdict.status in (truth, "timeout", "unknown"), (shift, truth, verdict)
        assert verdict.status == truth, (shift, truth, verdict)
        if verdict.status == "sat":
            assert_confirmed(prop, verdict)


def test_l2_ball_and_input_constraints_never_contradict_samples(tmp_path):
    graph = load_model(mlp(tmp_path / "b.onnx", "Relu", (12, 12), inputs=5, outputs=3, seed=60))
    center = torch.rand(1, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    constraints = InputConstraints(torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]], dtype=F64),
                                   (center[0, 0] + center[0, 1]).reshape(1))  # x0 + x1 <= their centre sum
    row = torch.tensor([0.0, 1.0, -1.0], dtype=F64)
    for region, extra in ((LpBall(center, torch.tensor([0.6], dtype=F64), 2.0), None),
                          (Box(center - 0.4, center + 0.4), constraints)):
        points = region.sample(20000, torch.Generator().manual_seed(2))[0]
        if extra is not None:
            points = points[extra.slack(points) <= 0]
        with torch.no_grad():
            values = graph.to(F64).forward_flat(points) @ row
        lowest = float(values.min())
        for rhs, expected in ((lowest + 0.02, "sat"), (lowest - 0.3, None)):
            prop = one_row(graph, region, row, rhs, extra)
            verdict = decide(graph, prop)
            if expected == "sat":  # a sampled point meets it
                assert verdict.status == "sat", verdict
                assert_confirmed(prop, verdict)
            else:
                assert verdict.status in ("unsat", "sat"), verdict
                if verdict.status == "sat":
                    assert_confirmed(prop, verdict)


def net_with_optimum(tmp_path):
    """A 5-12-12-3 ReLU net, a box, the row y0 - y1 and its exact minimum over the box (milp)."""
    graph = load_model(mlp(tmp_path / "t.onnx", "Relu", (12, 12), inputs=5, outputs=3, seed=41))
    region = box_around(1, 5, 0.4)
    row = torch.tensor([1.0, -1.0, 0.0], dtype=F64)
    return graph, region, row, milp().minimize(graph, region, row).value


def test_timeout_and_domain_cap(tmp_path):
    graph, region, row, optimum = net_with_optimum(tmp_path)
    crown = float(Crown().bound(graph, region, row.reshape(1, 1, 3).float()).lower)
    hard = one_row(graph, region, row, optimum - 0.05 * (optimum - crown))  # unsat, open at the root
    assert BranchAndBound().decide(graph, hard, OPTIONS, time.monotonic() - 1).status == "timeout"
    capped = BaBOptions(max_inputs=2, relu=ReluSplitOptions(max_domains=1, batch=1))
    assert BranchAndBound().decide(graph, hard, capped, time.monotonic() + 20).status == "unknown"


def test_verify_pipeline_uses_relu_splitting_for_wide_inputs(tmp_path):
    exact = milp()
    graph = load_model(mlp(tmp_path / "w.onnx", "Relu", (10, 10), inputs=20, outputs=3, seed=80))
    region = box_around(4, 20, 0.15)
    row = torch.tensor([1.0, 0.0, -1.0], dtype=F64)
    optimum = exact.minimize(graph, region, row).value
    crown = float(Crown().bound(graph, region, row.reshape(1, 1, 3).float()).lower)
    prop = one_row(graph, region, row, optimum - 0.1 * (optimum - crown))
    verdict = verify(graph, prop, VerifyOptions(timeout=30))
    assert verdict.status == "unsat" and verdict.method == "bab", verdict


@pytest.mark.parametrize("phase", ["active", "inactive"])
def test_split_domain_bounds_contain_every_point_of_the_domain(tmp_path, phase):
    # Fix an unstable neuron of each ReLU layer, re-bound the later layers keeping the fixed bounds
    # (as relu_split does): every sampled point of the sub-domain lies inside every bound.
    graph = load_model(mlp(tmp_path / "d.onnx", "Relu", (12, 12, 12), inputs=5, outputs=3, seed=90)).to(F64)
    region = box_around(2, 5, 0.5)
    with torch.no_grad():
        bounds = layer_bounds(graph, region, "adaptive", {})
    values = [node.output for node in graph.nodes if node.op_type == "Gemm"][:-1]
    points = region.sample(40000, torch.Generator().manual_seed(4))[0]
    with torch.no_grad():
        samples = graph.forward(points, keep_all=True)
    inside = torch.ones(len(points), dtype=torch.bool)
    reference = dict(bounds)
    for value in values[:2]:
        bound = reference[value]
        neuron = int(((bound.lower < 0) & (bound.upper > 0)).flatten().nonzero()[0, 0])
        lower, upper = bound.lower.flatten(1).clone(), bound.upper.flatten(1).clone()
        if phase == "active":
            lower[0, neuron] = 0.0
            inside &= samples[value].flatten(1)[:, neuron] >= 0
        else:
            upper[0, neuron] = 0.0
            inside &= samples[value].flatten(1)[:, neuron] <= 0
        reference[value] = Interval(lower.reshape(bound.lower.shape), upper.reshape(bound.upper.shape))
        with torch.no_grad():
            reference = layer_bounds(graph, region, "adaptive", {values[0]: reference[values[0]]},
                                     reference=reference, skip_stable=True)
    assert int(inside.sum()) > 200
    tighter = 0
    for value in values:
        assert reference[value].contains(samples[value][inside], 1e-9), value
        tighter += float((reference[value].upper - reference[value].lower).sum()) < \
            float((bounds[value].upper - bounds[value].lower).sum()) - 1e-6
    assert tighter >= 2  # the split layers and some later one got tighter


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh"])
def test_without_relus_the_tightened_root_decides_only_what_holds(tmp_path, activation):
    """No ReLU to split: `unsat` only from the root's bound (every neuron tightened), which must beat
    CROWN's and never contradict a sampled point; `unknown` otherwise, never `sat` without a point."""
    proved_beyond_crown = 0
    for seed in range(3):
        graph = load_model(mlp(tmp_path / f"s{seed}.onnx", activation, (12, 12, 12), inputs=5, outputs=3,
                               seed=60 + seed)).to(F64)
        region = box_around(seed, 5, 0.5)
        row = torch.tensor([1.0, -1.0, 0.0], dtype=F64)
        with torch.no_grad():
            sampled = float((graph.forward_flat(region.sample(20000, torch.Generator().manual_seed(seed))[0])
                             @ row).min())
        crown = float(Crown().bound(graph, region, row.reshape(1, 1, 3)).lower)
        violated = decide(graph, one_row(graph, region, row, sampled + 1e-3))
        assert violated.status == "unknown", (seed, violated)
        beyond = decide(graph, one_row(graph, region, row, crown + 0.2 * (sampled - crown)))
        assert beyond.status in ("unsat", "unknown"), (seed, beyond)
        proved_beyond_crown += beyond.status == "unsat"
    if activation == "Tanh":  # CROWN is within 0.4 % of the sampled optimum on the sigmoid nets: no room
        assert proved_beyond_crown >= 1


def net_for_workers(tmp_path):
    """A 6-32-32-3 ReLU net, a box, one row and the row's exact minimum over the box."""
    graph = load_model(mlp(tmp_path / "w.onnx", "Relu", (32, 32), inputs=6, outputs=3, seed=60))
    region = box_around(3, 6, 0.3)
    row = torch.tensor([1.0, -1.0, 0.0], dtype=F64)
    return graph, region, row, milp().minimize(graph, region, row).value


def test_a_search_shared_out_to_workers_agrees_with_milp(tmp_path, monkeypatch):
    """With workers, the open domains are dealt to processes once there are a few (here 2 a worker, and
    at once, so that a small net shares too); the pieces cover the region, so the verdicts match the
    exact ones."""
    import verikit.methods.relu_split as relu_split

    monkeypatch.setattr(relu_split, "DOMAINS_PER_WORKER", 2)
    monkeypatch.setattr(relu_split, "POOL_AFTER", 0.0)
    monkeypatch.setattr(relu_split, "WORKER_START", 0.0)
    graph, region, row, optimum = net_for_workers(tmp_path)
    options = BaBOptions(max_inputs=2, workers=2)
    below = BranchAndBound().decide(graph, one_row(graph, region, row, optimum - 0.02), options,
                                    time.monotonic() + 60)
    assert below.status == "unsat" and "pieces in 2 workers" in below.detail, below
    above = BranchAndBound().decide(graph, one_row(graph, region, row, optimum + 0.002), options,
                                    time.monotonic() + 60)
    assert above.status == "sat", above
    assert_confirmed(one_row(graph, region, row, optimum + 0.002), above)


def test_a_short_search_starts_no_workers(tmp_path, monkeypatch):
    """Starting workers costs each a torch import: a search that ends within POOL_AFTER seconds stays in
    this process even when it has domains enough to share."""
    import verikit.methods.relu_split as relu_split

    monkeypatch.setattr(relu_split, "DOMAINS_PER_WORKER", 2)
    monkeypatch.setattr(relu_split, "POOL_AFTER", 60.0)
    started = []
    monkeypatch.setattr(relu_split, "start_pool", lambda workers: started.append(workers))
    graph, region, row, optimum = net_for_workers(tmp_path)
    verdict = BranchAndBound().decide(graph, one_row(graph, region, row, optimum - 0.02),
                                      BaBOptions(max_inputs=2, workers=2), time.monotonic() + 60)
    assert verdict.status == "unsat" and "domains bounded" in verdict.detail and started == []


def deep_net_open_at_the_root(tmp_path):
    """A 5-12-12-12-3 ReLU net and a one-row spec over a box that its root bound leaves open."""
    graph = load_model(mlp(tmp_path / "d.onnx", "Relu", (12, 12, 12), inputs=5, outputs=3, seed=90))
    spec = one_row(graph, box_around(2, 5, 0.5), torch.tensor([1.0, -1.0, 0.0]), 100.0).regions[0]
    return graph, spec


def first_split_layer(problem) -> int:
    """The index of the ReLU layer where the root's first split falls."""
    branch = int(problem.root().domains.branch[0])
    return next(i for i, layer in enumerate(problem.layers) if layer.offset <= branch < layer.offset + layer.size)


def test_looseness_power_steers_splits_towards_earlier_layers(tmp_path):
    # A split re-bounds every later layer, so relu_looseness_power raises a neuron's score by the share
    # of unstable neurons in each later layer: very high, the first split falls in the first layer;
    # negative, in the last; the default lies between.
    from verikit.methods.relu_split import _Problem

    graph, spec = deep_net_open_at_the_root(tmp_path)
    chosen = {}
    for power in (-50.0, 0.0, BaBOptions().relu.looseness_power, 50.0):
        options = BaBOptions(max_inputs=2, relu=ReluSplitOptions(looseness_power=power))
        chosen[power] = first_split_layer(_Problem(graph, spec, options))
    assert chosen[50.0] == 0 and chosen[-50.0] == 2
    assert chosen[50.0] <= chosen[BaBOptions().relu.looseness_power] <= chosen[0.0]


def test_optimised_intermediate_bounds_of_children_hold_and_tighten(tmp_path):
    # relu_intermediate_steps re-bounds a split's later layers with slopes optimised through them
    # (beta-CROWN's joint optimisation): each child's bounds still contain every sampled point of its
    # half of the region, and they are never looser than the plain CROWN re-bounding, tighter somewhere.
    from verikit.methods.relu_split import _Problem

    graph, spec = deep_net_open_at_the_root(tmp_path)
    region = spec.region
    children = {}
    for steps in (0, 8):
        relu = ReluSplitOptions(looseness_power=50.0, intermediate_steps=steps)
        problem = _Problem(graph, spec, BaBOptions(max_inputs=2, relu=relu))
        parents = problem.root().domains
        layer = problem.layers[0]  # the power puts the first split there
        assert layer.offset <= int(parents.branch[0]) < layer.offset + layer.size
        children[steps] = problem._split_and_rebound(parents, layer)
    neuron = int(parents.branch[0]) - layer.offset
    points = region.sample(40000, torch.Generator().manual_seed(5))[0].float()
    with torch.no_grad():
        samples = graph.forward(points, keep_all=True)
    split = samples[layer.value].flatten(1)[:, neuron]
    tighter = 0.0
    for child, half in enumerate((split >= 0, split <= 0)):  # the active child first, then the inactive
        assert int(half.sum()) > 200
        for value in problem.relaxed:
            plain, tight = (Interval(c[value].lower[child], c[value].upper[child])
                            for c in (children[0], children[8]))
            assert tight.contains(samples[value][half].reshape(-1, *tight.lower.shape), 1e-4), value
            assert bool((tight.lower >= plain.lower - 1e-5).all() and (tight.upper <= plain.upper + 1e-5).all())
            tighter += float((plain.upper - plain.lower).sum() - (tight.upper - tight.lower).sum())
    assert tighter > 1e-3


def test_optimised_intermediate_bounds_agree_with_milp(tmp_path):
    graph, region, row, optimum = net_with_optimum(tmp_path)
    options = BaBOptions(max_inputs=2, relu=ReluSplitOptions(intermediate_steps=4))
    for rhs, expected in ((optimum - 0.02, "unsat"), (optimum + 0.02, "sat")):
        prop = one_row(graph, region, row, rhs)
        verdict = BranchAndBound().decide(graph, prop, options, time.monotonic() + 20)
        assert verdict.status == expected, (rhs, verdict)
        if expected == "sat":
            assert_confirmed(prop, verdict)


def test_measured_split_costs_steer_splits_away_from_dear_layers(tmp_path):
    # relu_split_cost divides a neuron's score by its layer's cost a parent (re-bounding the later layers
    # after a split there, plus bounding the children), as measured during the search: made very dear,
    # the layer a split would choose loses it; without the option the choice stays.
    from verikit.methods.relu_split import _Problem, _SplitCosts

    costs = _SplitCosts(3, enabled=True)
    assert costs.relative() == [1.0, 1.0, 1.0]  # nothing measured yet
    costs.rebound(0, 3.0), costs.rebound(2, 1.0), costs.finish(1.0)
    assert costs.relative() == [2.0, 1.0, 1.0]  # layer 1, not yet split, counts as the cheapest
    assert _SplitCosts(3, enabled=False).relative() == [1.0, 1.0, 1.0]

    graph, spec = deep_net_open_at_the_root(tmp_path)

    def split_layer(enabled: bool, dear: int | None) -> int:
        problem = _Problem(graph, spec, BaBOptions(max_inputs=2, relu=ReluSplitOptions(split_cost=enabled)))
        for index in range(len(problem.layers)):
            problem.costs.rebound(index, 1e6 if index == dear else 1e-3)
        problem.costs.finish(1e-3)
        return first_split_layer(problem)

    chosen = split_layer(False, None)
    assert split_layer(False, chosen) == chosen
    assert split_layer(True, chosen) != chosen


def test_split_costs_wait_for_the_gpu(tmp_path, monkeypatch):
    # A GPU runs kernels asynchronously: the clock that times a split's cost must wait for them, or
    # the cost of one batch lands on the next. On the CPU there is nothing to wait for.
    from verikit.methods.relu_split import _Problem

    graph, spec = deep_net_open_at_the_root(tmp_path)
    problem = _Problem(graph, spec, BaBOptions(max_inputs=2))
    waits = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waits.append(device))
    problem._clock()
    assert waits == []
    problem.device = torch.device("cuda")
    problem._clock()
    assert waits == [torch.device("cuda")]


def test_a_resumed_search_sizes_its_first_batch_to_the_deadline(tmp_path, monkeypatch):
    # A search resumed from open domains (the pool's second phase, a worker's part) keeps the last cost
    # a parent: with 1 s a parent assumed and 3.5 s left, it bounds 2 parents (3.5 / (1.5 x 1 s)), not
    # a full batch that would overrun the deadline.
    from verikit.methods.relu_split import _Outcome, _Problem, _search

    graph, region, row, optimum = net_for_workers(tmp_path)
    prop = one_row(graph, region, row, optimum - 0.02)
    options = BaBOptions(max_inputs=2, relu=ReluSplitOptions(batch=64))
    problem = _Problem(graph, prop.regions[0], options)
    queue, stuck = _search(problem, prop, problem.root(), options, time.monotonic() + 60, share_at=8)
    assert len(queue) >= 8
    sizes, bound_children = [], problem.bound_children
    monkeypatch.setattr(problem, "bound_children", lambda parents: (sizes.append(len(parents)),
                                                                    bound_children(parents))[1])
    problem.seconds_per_parent = 1.0
    _search(problem, prop, _Outcome(queue, stuck, []), options, time.monotonic() + 3.5)
    assert sizes[0] == 2
