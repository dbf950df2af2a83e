"""The dense back-substitution engine and the fast-lin / crown methods: sound on random nets of every
op family (sampled and gradient-attacked points), tighter than IBP, exact where the net is affine on
the region, equal to a hand-computed Fast-Lin bound, and consistent across batching and chunking."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from netgen import NetBuilder, cnn, every_family, mlp, tiny_net
from verikit.bounds import Interval
from verikit.graph import Graph
from verikit.methods.ibp import IBP
from verikit.methods.linear_relaxation import Crown, FastLin, LinearRelaxationOptions
from verikit.onnx_import import load_model
from verikit.plugins import get_method
from verikit.propagate.backward import backward_bound, compute_bounds
from verikit.region import Box, LpBall

F64 = torch.float64
METHODS = {"fast-lin": FastLin(), "crown": Crown()}


def mixed_mlp(path):
    """Every activation in one MLP."""
    net = NetBuilder((1, 4), seed=11)
    for activation in ("Relu", "Tanh", "LeakyRelu", "Sigmoid", "Atan"):
        net.gemm(6)
        net.op(activation, **({"alpha": 0.2} if activation == "LeakyRelu" else {}))
    net.gemm(3)
    return net.save(path)


def subtract_block(path):
    """fc -> relu -> [fc -> relu -> fc] - shortcut -> relu -> fc: a Sub of two computed tensors."""
    net = NetBuilder((1, 4), seed=12)
    net.gemm(6)
    block_in = net.op("Relu")
    net.gemm(6)
    net.op("Relu")
    main = net.gemm(6)
    net.op("Sub", block_in, source=main, shape=(1, 6))
    net.op("Relu")
    net.gemm(2)
    return net.save(path)


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nets")
    nets = every_family(folder)
    nets["mixed-mlp"] = mixed_mlp(folder / "mixed.onnx")
    nets["residual-sub"] = subtract_block(folder / "sub.onnx")
    return {name: load_model(path) for name, path in nets.items()}


def regions(n: int):
    """A box and balls in every norm (the linf and l1 ones clipped by a domain box), one problem each."""
    center = torch.rand(1, n, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
    domain = Box(center - 0.4, center + 0.4)
    yield "box", Box(center - 0.3, center + 0.3)
    for norm, radius, clip in ((float("inf"), 0.25, domain), (2.0, 0.6, None), (1.0, 0.9, domain)):
        yield f"l{norm}", LpBall(center, torch.tensor([radius], dtype=F64), norm, clip)


def attacked_outputs(graph, region, steps: int = 25) -> torch.Tensor:
    """Outputs at points pushed by signed gradient steps towards each output's max and min."""
    k = graph.output_size
    x = region.sample(4 * k, torch.Generator().manual_seed(1))[0]
    signs = torch.cat([torch.eye(k), -torch.eye(k)]).repeat(2, 1).to(F64)
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad((graph.forward_flat(x) * signs).sum(), x)
        x = region.project((x + 0.05 * grad.sign()).unsqueeze(0))[0].detach()
    with torch.no_grad():
        return graph.forward_flat(x)


@pytest.mark.parametrize("family", ["relu-mlp", "leaky-mlp", "sigmoid-mlp", "tanh-mlp", "atan-mlp", "mixed-mlp",
                                    "cnn-avgpool-bn", "cnn-maxpool", "cnn-sigmoid", "residual-identity",
                                    "residual-projection", "residual-sub"])
def test_bounds_contain_sampled_and_attacked_values(networks, family):
    graph = networks[family].to(F64)
    rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
    for region_name, region in regions(graph.input_size):
        points = region.sample(1000, torch.Generator().manual_seed(2))[0]
        with torch.no_grad():
            values = graph.forward(points, keep_all=True)
        attacked = attacked_outputs(graph, region)
        for method_name, intersect in itertools.product(METHODS, (True, False)):
            intermediate = {}
            options = LinearRelaxationOptions(dtype="float64", intersect_ibp=intersect)
            result = METHODS[method_name].bound(graph, region, rows, options, intermediate)
            where = f"{family}/{region_name}/{method_name}/intersect={intersect}"
            assert intermediate, where
            for value, bound in intermediate.items():
                assert bound.contains(values[value], 1e-9), f"{where}: {value} escapes its bound"
            assert result.contains(values[graph.output_name].flatten(1), 1e-9), where
            assert result.contains(attacked, 1e-9), f"{where}: an attacked output escapes"


def mean_width(bound: Interval) -> float:
    return float((bound.upper - bound.lower).mean())


def test_crown_is_tighter_than_ibp_and_fast_lin_on_average(tmp_path):
    widths = {"ibp": [], "fast-lin": [], "crown": []}
    pure = LinearRelaxationOptions(intersect_ibp=False)
    for seed in range(6):
        graph = load_model(mlp(tmp_path / f"m{seed}.onnx", "Relu", (16, 16, 16), inputs=6, outputs=4, seed=seed))
        center = torch.rand(1, 6, generator=torch.Generator().manual_seed(seed))
        region = LpBall(center, torch.tensor([0.1]))
        rows = torch.eye(4).unsqueeze(0)
        widths["ibp"].append(mean_width(IBP().bound(graph, region, rows)))
        for name, method in METHODS.items():
            widths[name].append(mean_width(method.bound(graph, region, rows, pure)))
    mean = {name: float(np.mean(w)) for name, w in widths.items()}
    assert mean["crown"] < 0.7 * mean["ibp"], mean
    assert mean["crown"] <= mean["fast-lin"], mean


def affine_residual(path):
    """fc -> fc, then Add and Sub of computed tensors, no activation: affine everywhere."""
    net = NetBuilder((1, 3), seed=4)
    first = net.gemm(4)
    second = net.gemm(4)
    net.op("Add", first, source=second, shape=(1, 4))
    summed = net.gemm(4)
    net.op("Sub", first, source=summed, shape=(1, 4))
    net.gemm(2)
    return net.save(path)


def exact_range(graph, center: torch.Tensor, radius: float) -> Interval:
    """The range of an affine function over the box center +- radius: f(c) -+ |J| r."""
    jacobian = torch.autograd.functional.jacobian(lambda x: graph.forward_flat(x.unsqueeze(0))[0], center[0])
    value = graph.forward_flat(center)
    spread = (jacobian.abs() * radius).sum(-1)
    return Interval(value - spread, value + spread)


@pytest.mark.parametrize("net", ["stable-relu", "affine-residual"])
def test_bounds_are_exact_where_the_net_is_affine(tmp_path, net):
    if net == "stable-relu":
        path, radius = mlp(tmp_path / "one.onnx", "Relu", (8,), inputs=3, outputs=2, seed=3), 0.01
    else:
        path, radius = affine_residual(tmp_path / "res.onnx"), 0.5
    graph = load_model(path).to(F64)
    center = torch.tensor([[0.3, -0.2, 0.5]], dtype=F64)
    region = Box(center - radius, center + radius)
    truth = exact_range(graph, center, radius)
    for method in METHODS.values():
        intermediate = {}
        options = LinearRelaxationOptions(dtype="float64", intersect_ibp=False)
        result = method.bound(graph, region, torch.eye(2, dtype=F64).unsqueeze(0), options, intermediate)
        for bound in intermediate.values():  # the premise: every ReLU is stable on the region
            assert bool(((bound.lower >= 0) | (bound.upper <= 0)).all())
        torch.testing.assert_close(result.lower, truth.lower, rtol=0, atol=1e-12)
        torch.testing.assert_close(result.upper, truth.upper, rtol=0, atol=1e-12)


def test_hand_computed_fast_lin_and_crown_bounds(tmp_path):
    # Over x in [-1, 1]^2: z1 = x1 + x2 + 0.5 in [-1.5, 2.5], z2 = x1 - x2 in [-2, 2], both unstable.
    # Upper lines: h1 <= 0.625 z1 + 0.9375, h2 <= 0.5 z2 + 1. Fast-Lin lower lines h1 >= 0.625 z1,
    # h2 >= 0.5 z2. y = 2 h1 - h2 + 0.25:
    #   upper: 2(0.625 z1 + 0.9375) - 0.5 z2 + 0.25 = 0.75 x1 + 1.75 x2 + 2.75     -> max 5.25
    #   lower: 2(0.625 z1) - (0.5 z2 + 1) + 0.25    = 0.75 x1 + 1.75 x2 - 0.125    -> min -2.625
    # CROWN takes lower slope 1 for both (u >= -l):
    #   upper: 2(0.625 z1 + 0.9375) - z2 + 0.25     = 0.25 x1 + 2.25 x2 + 2.75     -> max 5.25
    #   lower: 2 z1 - (0.5 z2 + 1) + 0.25           = 1.5 x1 + 2.5 x2 + 0.25       -> min -3.75
    # IBP: h1 in [0, 2.5], h2 in [0, 2] -> y in [-1.75, 5.25], which tightens both lower bounds.
    graph = load_model(tiny_net(tmp_path / "tiny.onnx"))
    region = Box(-torch.ones(1, 2), torch.ones(1, 2))
    rows = torch.ones(1, 1, 1)
    expected = {("fast-lin", False): (-2.625, 5.25), ("crown", False): (-3.75, 5.25),
                ("fast-lin", True): (-1.75, 5.25), ("crown", True): (-1.75, 5.25)}
    for (name, intersect), (lower, upper) in expected.items():
        result = METHODS[name].bound(graph, region, rows, LinearRelaxationOptions(intersect_ibp=intersect))
        assert result.lower.item() == pytest.approx(lower, abs=1e-6), (name, intersect)
        assert result.upper.item() == pytest.approx(upper, abs=1e-6), (name, intersect)


def test_batches_and_chunks_agree_with_single_problems(networks):
    graph = networks["cnn-avgpool-bn"]
    g = torch.Generator().manual_seed(5)
    centers = torch.rand(3, graph.input_size, generator=g)
    region = LpBall(centers, torch.tensor([0.05, 0.1, 0.2]), 2.0)
    rows = torch.randn(1, 4, graph.output_size, generator=g)
    crown = Crown()
    batched = crown.bound(graph, region, rows, LinearRelaxationOptions(dtype="float64"))
    chunked = crown.bound(graph, region, rows, LinearRelaxationOptions(dtype="float64", batch_rows=7))
    assert batched.lower.dtype == F64 and batched.lower.shape == (3, 4)
    torch.testing.assert_close(chunked.lower, batched.lower)
    torch.testing.assert_close(chunked.upper, batched.upper)
    for i in range(3):
        single = crown.bound(graph, region.select(slice(i, i + 1)), rows, LinearRelaxationOptions(dtype="float64"))
        torch.testing.assert_close(single.lower[0], batched.lower[i])
        torch.testing.assert_close(single.upper[0], batched.upper[i])


def test_prefilled_intermediate_bounds_are_used(networks):
    graph = networks["relu-mlp"]
    center = torch.zeros(1, graph.input_size)
    region = Box(center - 0.5, center + 0.5)
    rows = torch.eye(graph.output_size).unsqueeze(0)
    crown, options = Crown(), LinearRelaxationOptions(intersect_ibp=False)
    own = {}
    first = crown.bound(graph, region, rows, options, own)
    again = crown.bound(graph, region, rows, options, dict(own))
    torch.testing.assert_close(again.lower, first.lower)
    widened = {name: Interval(b.lower - 1, b.upper + 1) for name, b in own.items()}
    looser = crown.bound(graph, region, rows, options, widened)
    assert bool((looser.lower <= first.lower + 1e-6).all() and (looser.upper >= first.upper - 1e-6).all())
    assert mean_width(looser) > mean_width(first) + 0.1


def test_one_sided_backward_pass_matches_the_two_sided_one(networks):
    graph = networks["residual-identity"]
    center = torch.zeros(1, graph.input_size)
    region = Box(center - 0.1, center + 0.1)
    rows = torch.eye(graph.output_size).unsqueeze(0)
    both = compute_bounds(graph, region, rows, "adaptive")
    lower = compute_bounds(graph, region, rows, "adaptive", sides="lower", intersect_ibp=False)
    upper = compute_bounds(graph, region, rows, "adaptive", sides="upper", intersect_ibp=False)
    pure = compute_bounds(graph, region, rows, "adaptive", intersect_ibp=False)
    torch.testing.assert_close(lower.lower, pure.lower)
    torch.testing.assert_close(upper.upper, pure.upper)
    assert bool(torch.isinf(lower.upper).all() and torch.isinf(upper.lower).all())
    assert bool((both.lower >= pure.lower - 1e-6).all())


def test_backward_bound_of_the_input_itself_is_its_box():
    graph = Graph("x", (1, 3), "x", [], {"x": (1, 3)})
    region = Box(torch.tensor([[0.0, -1.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0]]))
    result = backward_bound(graph, region, "x", torch.eye(3).reshape(1, 3, 1, 3), {}, "adaptive")
    torch.testing.assert_close(result.lower, region.lower)
    torch.testing.assert_close(result.upper, region.upper)


def test_methods_are_registered_plugins():
    assert isinstance(get_method("fast-lin"), FastLin) and isinstance(get_method("crown"), Crown)
    assert get_method("crown").kind == "bound" and "relax" in get_method("crown").needs
    with pytest.raises(ValueError, match="dtype"):
        Crown().bound(None, None, None, LinearRelaxationOptions(dtype="float16"))


def test_small_cnn_crown_bounds_are_tighter_than_ibp(tmp_path):
    graph = load_model(cnn(tmp_path / "c.onnx", "AveragePool", batchnorm=False, seed=9))
    center = torch.rand(1, graph.input_size, generator=torch.Generator().manual_seed(3))
    region = LpBall(center, torch.tensor([0.05]))
    rows = torch.eye(graph.output_size).unsqueeze(0)
    pure = LinearRelaxationOptions(intersect_ibp=False)
    assert mean_width(Crown().bound(graph, region, rows, pure)) < 0.5 * mean_width(IBP().bound(graph, region, rows))


@pytest.mark.parametrize("name", ["box", "linf"])
def test_interval_shortcut_equals_back_substitution(networks, name, monkeypatch):
    """conv -> batch norm -> ReLU over a box: the interval image of the first conv is exact, so the
    engine takes it instead of one back-substitution row per neuron, with the same bounds."""
    from verikit.propagate import backward

    graph = networks["cnn-avgpool-bn"].to(F64)
    region = dict(regions(graph.input_size))[name]
    first = backward.values_to_relax(graph)[0]
    fast = backward.layer_bounds(graph, region, "adaptive", {}, intersect_ibp=False)
    monkeypatch.setattr(backward, "exact_by_intervals", lambda *args: False)
    slow = backward.layer_bounds(graph, region, "adaptive", {}, intersect_ibp=False)
    assert torch.allclose(fast[first].lower, slow[first].lower, atol=1e-10)
    assert torch.allclose(fast[first].upper, slow[first].upper, atol=1e-10)


def test_interval_shortcut_only_where_exact(networks):
    from verikit.propagate.backward import exact_by_intervals, input_interval, values_to_relax

    graph = networks["cnn-avgpool-bn"]
    ball = dict(regions(graph.input_size))["l2.0"]
    box = dict(regions(graph.input_size))["box"]
    nodes = {node.output: node for node in graph.nodes}
    first, second = (nodes[name] for name in values_to_relax(graph)[:2])
    everything = {name: None for name in graph.shapes} | {graph.input_name: input_interval(graph, box)}
    assert exact_by_intervals(graph, box, first, everything)
    assert not exact_by_intervals(graph, ball, first, everything)  # an L2 ball is not a box
    assert not exact_by_intervals(graph, box, second, everything)  # a ReLU lies upstream
