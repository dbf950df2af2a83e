"""LP encodings and the `dual-lp` / `lp-full` methods: every layer's encode_lp is exact at fixed inputs
(MILP) and contains the true value (LP); with Fast-Lin's intermediate bounds the LP is never looser than
Fast-Lin, lp-full never looser than dual-lp; LP bounds are sound on every op family and norm; and the
LP optimum of a hand-worked 2-2-1 network is the one computed on paper."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from netgen import NetBuilder, cnn, every_family, mlp, tiny_net
from verikit.errors import PluginError, VerikitError
from verikit.lp.encode import F64, LPModel, encode_graph, select_problem
from verikit.methods.lp import encoding_bounds
from verikit.methods.linear_relaxation import FastLin, LinearRelaxationOptions
from verikit.methods.lp import DualLP, LPFull, LPOptions
from verikit.onnx_import import load_model
from verikit.plugins import get_method
from verikit.region import Box, LpBall

S_SHAPED = ("sigmoid-mlp", "tanh-mlp", "atan-mlp", "cnn-sigmoid")


def odd_ops(path):
    """Grouped dilated conv with asymmetric pads, Pad with a fill value, AveragePool with pads
    (count_include_pad=0), Transpose, strided Slice, MaxPool with pads, GlobalAveragePool, Concat of two
    computed tensors and a constant, MatMul with the weight first, Reshape, Sub and Div by constants."""
    net = NetBuilder((1, 2, 7, 7), seed=21)

    def integers(values):
        name = net._name("i")
        net.initializers.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    weight = net.constant(net.rng.normal(0, 0.5, (4, 1, 3, 3)))
    net.op("Conv", weight, net.constant(net.rng.normal(0, 0.1, 4)), kernel_shape=[3, 3], group=2,
           dilations=[2, 2], pads=[1, 0, 0, 1], shape=(1, 4, 4, 4))
    net.op("LeakyRelu", alpha=0.2)
    net.op("Pad", integers([0, 0, 1, 0, 0, 0, 0, 1]), net.constant(np.array(0.5)), shape=(1, 4, 5, 5))
    net.op("AveragePool", kernel_shape=[2, 2], pads=[1, 1, 0, 0], count_include_pad=0, shape=(1, 4, 5, 5))
    net.op("Transpose", perm=[0, 1, 3, 2])
    net.op("Slice", integers([1]), integers([5]), integers([2]), integers([2]), shape=(1, 4, 2, 5))
    hidden = net.op("Relu")
    net.op("MaxPool", kernel_shape=[2, 2], strides=[1, 2], pads=[0, 0, 0, 1], shape=(1, 4, 1, 3))
    pooled = net.flatten()
    net.op("GlobalAveragePool", source=hidden, shape=(1, 4, 1, 1))
    averaged = net.flatten()
    net.op("Concat", averaged, net.constant(np.array([[0.3, -0.2]])), source=pooled, axis=1, shape=(1, 18))
    net.op("Transpose", perm=[1, 0], shape=(18, 1))
    net.op("MatMul", net.current, source=net.constant(net.rng.normal(0, 0.4, (3, 18))), shape=(3, 1))
    net.op("Reshape", integers([1, 3]), shape=(1, 3))
    net.op("Sub", net.constant(np.array([0.1, 0.2, 0.3])))
    net.op("Div", net.constant(np.array([2.0])))
    return net.save(path)


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lp_nets")
    paths = every_family(folder)
    paths["odd-ops"] = odd_ops(folder / "odd.onnx")
    return {name: load_model(path).to(F64) for name, path in paths.items()}


def box_around(graph, radius: float, seed: int = 0) -> Box:
    center = torch.rand(1, graph.input_size, generator=torch.Generator().manual_seed(seed), dtype=F64) * 2 - 1
    return Box(center - radius, center + radius)


def fixed_input_range(encoding, graph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of every output over the encoding with the input fixed to x (MILP for exact models)."""
    model = encoding.model
    model.tighten(encoding.inputs, x, x)
    outputs = encoding.values[graph.output_name].reshape(-1)
    low, high = [], []
    for index in range(outputs.size):
        cost = model.objective(outputs[index:index + 1], np.ones(1))
        solve = model.minimize_exact if model.exact else model.minimize
        low.append(solve(cost).bound)
        high.append(-solve(-cost).bound)
    return np.array(low), np.array(high)


@pytest.mark.parametrize("family", ["relu-mlp", "leaky-mlp", "sigmoid-mlp", "cnn-avgpool-bn", "cnn-maxpool",
                                    "cnn-sigmoid", "residual-identity", "residual-projection", "odd-ops"])
def test_encodings_are_exact_at_fixed_inputs(networks, family):
    graph = networks[family]
    region = box_around(graph, 0.3)
    _, bounds = encoding_bounds(graph, region, torch.eye(graph.output_size, dtype=F64)[None], "adaptive")
    points = region.sample(2, torch.Generator().manual_seed(1))[0]
    with torch.no_grad():
        values = graph.forward_flat(points).numpy()
    for point, value in zip(points.numpy(), values):
        low, high = fixed_input_range(encode_graph(graph, region, bounds), graph, point)
        assert np.all(low <= value + 1e-7) and np.all(high >= value - 1e-7), family
        if family not in S_SHAPED:
            low, high = fixed_input_range(encode_graph(graph, region, bounds, exact=True), graph, point)
            np.testing.assert_allclose(low, value, atol=1e-7, err_msg=family)
            np.testing.assert_allclose(high, value, atol=1e-7, err_msg=family)


def test_s_shaped_activations_have_no_exact_encoding(networks):
    graph = networks["sigmoid-mlp"]
    region = box_around(graph, 0.1)
    _, bounds = encoding_bounds(graph, region, torch.eye(3, dtype=F64)[None], "adaptive")
    with pytest.raises(VerikitError, match="Sigmoid node .* no exact MILP encoding"):
        encode_graph(graph, region, bounds, exact=True)


def fast_lin_and_lp(graph, region, rows):
    """Fast-Lin's bound, then dual-lp and lp-full on copies of Fast-Lin's intermediate bounds."""
    intermediate = {}
    fast = FastLin().bound(graph, region, rows, LinearRelaxationOptions(dtype="float64"), intermediate)
    dual = DualLP().bound(graph, region, rows, None, dict(intermediate))
    full = LPFull().bound(graph, region, rows, None, dict(intermediate))
    return fast, dual, full


def test_lp_is_never_looser_than_fast_lin_and_lp_full_never_looser_than_dual_lp(tmp_path):
    widths = {"fast-lin": [], "dual-lp": [], "lp-full": []}
    nets = [load_model(mlp(tmp_path / f"m{seed}.onnx", "Relu", (12, 12, 12), inputs=5, outputs=4, seed=seed))
            for seed in range(3)]
    nets.append(load_model(cnn(tmp_path / "c.onnx", "AveragePool", batchnorm=True, seed=3)))
    for graph, (norm, radius) in zip(nets, [("inf", 0.15), ("1", 0.4), ("inf", 0.25), ("inf", 0.08)]):
        center = torch.rand(1, graph.input_size, generator=torch.Generator().manual_seed(7), dtype=F64)
        region = LpBall(center, torch.tensor([radius], dtype=F64), float(norm))
        rows = torch.randn(1, 4, graph.output_size, generator=torch.Generator().manual_seed(8), dtype=F64)
        fast, dual, full = fast_lin_and_lp(graph, region, rows)
        assert bool((dual.lower >= fast.lower - 1e-6).all() and (dual.upper <= fast.upper + 1e-6).all())
        assert bool((full.lower >= dual.lower - 1e-6).all() and (full.upper <= dual.upper + 1e-6).all())
        for name, bound in (("fast-lin", fast), ("dual-lp", dual), ("lp-full", full)):
            widths[name].append(float((bound.upper - bound.lower).mean()))
    mean = {name: float(np.mean(w)) for name, w in widths.items()}
    assert mean["dual-lp"] < 0.95 * mean["fast-lin"] and mean["lp-full"] < 0.97 * mean["dual-lp"], mean


def regions(n: int):
    center = torch.rand(1, n, generator=torch.Generator().manual_seed(3), dtype=F64) * 2 - 1
    yield "box", Box(center - 0.2, center + 0.2)
    yield "linf", LpBall(center, torch.tensor([0.25], dtype=F64), float("inf"), Box(center - 0.2, center + 0.3))
    yield "l1", LpBall(center, torch.tensor([0.6], dtype=F64), 1.0)


@pytest.mark.parametrize("family", ["relu-mlp", "tanh-mlp", "cnn-maxpool", "cnn-sigmoid", "residual-projection",
                                    "odd-ops"])
def test_lp_bounds_contain_sampled_values(networks, family):
    graph = networks[family]
    rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
    for name, region in regions(graph.input_size):
        points = region.sample(500, torch.Generator().manual_seed(4))[0]
        with torch.no_grad():
            values = graph.forward_flat(points)
        intermediate = {}
        bound = DualLP().bound(graph, region, rows, None, intermediate)
        assert bound.contains(values, 1e-9), f"{family}/{name}"
        assert intermediate, "the fast-lin intermediate bounds are handed back"


def test_hand_computed_triangle_lp(tmp_path):
    # Over [-1, 1]^2: z1 in [-1.5, 2.5], z2 in [-2, 2], both unstable; chords h1 <= 0.625 z1 + 0.9375 and
    # h2 <= 0.5 z2 + 1. min y = min 2 max(0, z1) - (0.5 z2 + 1) + 0.25 = -1.5 at x = (0.5, -1);
    # max y = 2 (0.625 * 2.5 + 0.9375) - 0 + 0.25 = 5.25 at x = (1, 1). Fast-Lin with IBP gives [-1.75, 5.25].
    graph = load_model(tiny_net(tmp_path / "tiny.onnx"))
    region = Box(-torch.ones(1, 2), torch.ones(1, 2))
    for method in (DualLP(), get_method("dual-lp")):
        result = method.bound(graph, region, torch.ones(1, 1, 1))
        assert result.lower.item() == pytest.approx(-1.5, abs=1e-7)
        assert result.upper.item() == pytest.approx(5.25, abs=1e-7)
    lower_only = DualLP().bound(graph, region, torch.ones(1, 1, 1), LPOptions(sides="lower", solver="ipm"))
    assert lower_only.lower.item() == pytest.approx(-1.5, abs=1e-7) and lower_only.upper.item() == np.inf


def test_batched_problems_match_single_ones(networks):
    graph = networks["leaky-mlp"]
    centers = torch.rand(2, graph.input_size, generator=torch.Generator().manual_seed(5), dtype=F64)
    region = LpBall(centers, torch.tensor([0.3, 0.5], dtype=F64))
    rows = torch.randn(1, 2, graph.output_size, generator=torch.Generator().manual_seed(6), dtype=F64)
    batched = DualLP().bound(graph, region, rows)
    for index in range(2):
        single = DualLP().bound(graph, region.select(slice(index, index + 1)), rows)
        torch.testing.assert_close(single.lower[0], batched.lower[index], atol=1e-7, rtol=0)
        torch.testing.assert_close(single.upper[0], batched.upper[index], atol=1e-7, rtol=0)


def test_lp_full_hands_back_tighter_intermediate_bounds(networks):
    graph = networks["relu-mlp"]
    region = box_around(graph, 0.4)
    rows = torch.eye(graph.output_size, dtype=F64).unsqueeze(0)
    fast, full = {}, {}
    FastLin().bound(graph, region, rows, LinearRelaxationOptions(dtype="float64"), fast)
    LPFull().bound(graph, region, rows, None, full)
    width = lambda bound: float((bound.upper - bound.lower).sum())  # noqa: E731
    widths = {name: (width(fast[name]), width(full[name])) for name in fast}
    assert all(lp <= fl + 1e-9 for fl, lp in widths.values()), widths
    assert sum(lp for _, lp in widths.values()) < sum(fl for fl, _ in widths.values()) - 1e-3, widths


def test_l2_balls_and_missing_encoders_are_clear_errors(networks):
    graph = networks["relu-mlp"]
    ball = LpBall(torch.zeros(1, graph.input_size, dtype=F64), torch.tensor([0.1], dtype=F64), 2.0)
    with pytest.raises(VerikitError, match="not an L2 ball"):
        DualLP().bound(graph, ball, torch.eye(3, dtype=F64)[None])
    with pytest.raises(ValueError, match="solver"):
        DualLP().bound(graph, ball, torch.eye(3, dtype=F64)[None], LPOptions(solver="barrier"))

    from verikit.layers.base import LayerRule

    class Opaque(LayerRule):  # a third-party rule without encode_lp
        linear = True

    broken = graph.to(F64)
    first = broken.nodes[0]
    broken.nodes[0] = type(first)("n", "Foo", first.inputs, first.output, object.__new__(Opaque), "acme")
    with pytest.raises(PluginError, match="needs `encode_lp` for op Foo"):
        DualLP().bound(broken, box_around(graph, 0.1), torch.eye(3, dtype=F64)[None])


def test_model_rows_and_certified_dual_bound():
    # min x0 + 2 x1 subject to x0 + x1 >= 1, x0 - x1 = 0.2, 0 <= x <= 5: x = (0.6, 0.4), value 1.4
    model = LPModel()
    x = model.variables(0.0, 5.0, (2,))
    model.add_rows(x[None], [1.0, 1.0], lower=1.0)
    model.equal(x[:1], x[None, 1:], [1.0], 0.2)
    solution = model.minimize(model.objective(x, np.array([1.0, 2.0])))
    assert solution.status == "optimal"
    np.testing.assert_allclose(solution.x, [0.6, 0.4], atol=1e-9)
    assert solution.bound == pytest.approx(1.4, abs=1e-9) and solution.bound <= solution.value + 1e-12
    model.add_rows(x[None], [1.0, 1.0], upper=0.5)
    assert model.minimize(model.objective(x, np.ones(2))).status == "infeasible"


def test_problem_selection_keeps_shared_bounds():
    bounds = {"a": encoding_interval(2), "b": encoding_interval(1)}
    picked = select_problem(bounds, 1)
    assert picked["a"].lower.shape == (1, 3) and float(picked["a"].lower[0, 0]) == 1.0
    assert picked["b"].lower.shape == (1, 3) and float(picked["b"].lower[0, 0]) == 0.0


def encoding_interval(batch: int):
    from verikit.bounds import Interval

    lower = torch.arange(batch, dtype=F64).reshape(batch, 1).expand(batch, 3)
    return Interval(lower, lower + 1)


def test_rows_reached_after_the_deadline_keep_the_back_substitution_bound(tmp_path):
    graph = load_model(mlp(tmp_path / "m.onnx", "Relu", (12, 12), inputs=5, outputs=4, seed=1))
    center = torch.rand(1, graph.input_size, generator=torch.Generator().manual_seed(7), dtype=F64)
    region = LpBall(center, torch.tensor([0.15], dtype=F64), float("inf"))
    rows = torch.randn(1, 4, graph.output_size, generator=torch.Generator().manual_seed(8), dtype=F64)
    solved = DualLP().bound(graph, region, rows)
    late = DualLP().bound(graph, region, rows, deadline=0.0)  # past: no LP is solved
    fallback, _ = encoding_bounds(graph, region, rows, "same-slope", None)
    assert torch.allclose(late.lower, fallback.lower) and torch.allclose(late.upper, fallback.upper)
    assert bool((solved.lower >= late.lower - 1e-6).all() and (solved.upper <= late.upper + 1e-6).all())
    assert float((solved.upper - solved.lower).sum()) < float((late.upper - late.lower).sum())
