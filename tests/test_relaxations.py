"""Relaxations of the nonlinear rules: every line sandwiches its function on a dense grid of its
interval, in every mode and on every kind of interval; MaxPool's window lines hold on sampled windows;
the lines are as tight as the papers say; and the example plugin's Softsign gets the same guarantees."""
from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
import torch

from verikit.bounds import Interval
from verikit.graph import NodeInfo
from verikit.layers.base import RELAXATION_MODES
from verikit.layers.maxpool import MaxPool
from verikit.layers.relu import LeakyRelu, Relu
from verikit.layers.s_shaped import Atan, Sigmoid, Tanh

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "verikit-example"
TOLERANCE = 1e-6
N = 201


def load_plugin_module():
    """The example plugin's softsign module, loaded from its source file (the plugin is not installed)."""
    spec = importlib.util.spec_from_file_location("verikit_example_softsign_source",
                                                  PLUGIN / "verikit_example" / "softsign.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def elementwise(rule_class, **attributes):
    """A rule for a value of ONNX shape (N,)."""
    return rule_class.build(NodeInfo("act", rule_class.op_types[0], attributes, ("x",), {}, ((N,),), (N,)))


def interval_families(seed: int = 0) -> dict[str, Interval]:
    """[1, N] float64 intervals of every kind the relaxations must handle."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda: torch.rand(1, N, generator=g, dtype=torch.float64)  # noqa: E731
    center = (rand() - 0.5) * 8
    crossing_lower, crossing_upper = -rand() * 6 - 1e-4, rand() * 6 + 1e-4
    negative_upper, positive_lower = -rand() * 4, rand() * 4
    return {
        "narrow": Interval(center - rand() * 1e-3, center + rand() * 1e-3),
        "tiny": Interval(center - rand() * 1e-10, center + rand() * 1e-10),
        "wide": Interval(center - 5 - rand() * 40, center + 5 + rand() * 40),
        "crossing": Interval(crossing_lower, crossing_upper),
        "barely-crossing": Interval(-rand() * 1e-5, rand() * 3),
        "negative": Interval(negative_upper - rand() * 6, negative_upper),
        "positive": Interval(positive_lower, positive_lower + rand() * 6),
        "point": Interval(center, center.clone()),
    }


def grid(bound: Interval, steps: int = 401) -> torch.Tensor:
    """[steps + 1, 1, N] points of [l, u]: an even grid plus 0 where 0 is inside."""
    t = torch.linspace(0, 1, steps, dtype=torch.float64).view(-1, 1, 1)
    zero = torch.zeros_like(bound.lower).clamp(bound.lower, bound.upper).unsqueeze(0)
    return torch.cat([bound.lower + t * (bound.upper - bound.lower), zero])


def assert_sandwiched(rule, bound: Interval, relaxation) -> None:
    z = grid(bound)
    value = rule.forward(z)
    below = relaxation.lower_slope * z + relaxation.lower_intercept
    above = relaxation.upper_slope * z + relaxation.upper_intercept
    assert (below <= value + TOLERANCE).all(), f"lower line above f by {(below - value).max():.3g}"
    assert (value <= above + TOLERANCE).all(), f"upper line below f by {(value - above).max():.3g}"


SOFTSIGN = load_plugin_module().Softsign
RULES = {"relu": (Relu, {}), "leaky-0.1": (LeakyRelu, {"alpha": 0.1}), "leaky-1": (LeakyRelu, {"alpha": 1.0}),
         "sigmoid": (Sigmoid, {}), "tanh": (Tanh, {}), "atan": (Atan, {}), "softsign": (SOFTSIGN, {})}


@pytest.mark.parametrize("mode", RELAXATION_MODES)
@pytest.mark.parametrize("name", RULES)
def test_lines_sandwich_the_function_on_every_kind_of_interval(name, mode):
    rule_class, attributes = RULES[name]
    rule = elementwise(rule_class, **attributes)
    slopes = torch.rand(1, N, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 3 - 1
    if not rule.kinks and rule.offers("initial_parameters"):  # S-shaped: tangent positions (upper, lower) in [0, 1]
        slopes = torch.rand(1, 2, N, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for kind, bound in interval_families().items():
        relaxation = rule.relax(bound, mode, lower_slope=slopes if mode == "optimizable" else None)
        assert relaxation.upper_slope.shape == bound.lower.shape, kind
        assert_sandwiched(rule, bound, relaxation)


def test_relu_stable_neurons_are_exact_and_unstable_upper_line_is_the_chord():
    rule = elementwise(Relu)
    families = interval_families()
    for kind in ("negative", "positive"):
        relaxation = rule.relax(families[kind], "same-slope")
        slope = 1.0 if kind == "positive" else 0.0
        for tensor, expected in zip((relaxation.lower_slope, relaxation.upper_slope, relaxation.lower_intercept,
                                     relaxation.upper_intercept), (slope, slope, 0.0, 0.0)):
            assert torch.equal(tensor, torch.full_like(tensor, expected)), kind
    bound = families["crossing"]
    relaxation = rule.relax(bound, "adaptive")
    line = lambda z: relaxation.upper_slope * z + relaxation.upper_intercept  # noqa: E731
    assert torch.allclose(line(bound.lower), torch.zeros_like(bound.lower), atol=1e-12)
    assert torch.allclose(line(bound.upper), bound.upper, atol=1e-12)


def relaxation_area(relaxation, bound: Interval) -> torch.Tensor:
    """Per neuron: the area between the upper and the lower line over [l, u]."""
    def integral(slope: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
        return slope * (bound.upper ** 2 - bound.lower ** 2) / 2 + intercept * (bound.upper - bound.lower)

    return (integral(relaxation.upper_slope, relaxation.upper_intercept)
            - integral(relaxation.lower_slope, relaxation.lower_intercept))


def test_relu_lower_slopes_by_mode_and_adaptive_area_is_smallest():
    rule, bound = elementwise(Relu), interval_families()["crossing"]
    relaxations = {mode: rule.relax(bound, mode) for mode in ("same-slope", "adaptive", "zero")}
    chord = bound.upper / (bound.upper - bound.lower)
    assert torch.allclose(relaxations["same-slope"].lower_slope, chord)
    assert torch.equal(relaxations["adaptive"].lower_slope, (bound.upper >= -bound.lower).double())
    assert torch.equal(relaxations["zero"].lower_slope, torch.zeros_like(chord))
    adaptive, same = (relaxation_area(relaxations[m], bound) for m in ("adaptive", "same-slope"))
    assert (adaptive <= same + 1e-12).all() and adaptive.mean() < same.mean()
    chosen = torch.tensor([[-3.0, 0.25, 7.0]], dtype=torch.float64).repeat(1, N // 3)
    optimized = rule.relax(bound, "optimizable", lower_slope=chosen)
    assert optimized.lower_slope[0, :3].tolist() == [0.0, 0.25, 1.0]


def test_optimizable_slopes_carry_gradients_for_alpha_crown():
    slopes = torch.full((1, N), 0.5, dtype=torch.float64, requires_grad=True)
    relaxation = elementwise(Relu).relax(interval_families()["crossing"], "optimizable", lower_slope=slopes)
    relaxation.lower_slope.sum().backward()
    assert torch.equal(slopes.grad, torch.ones_like(slopes))


@pytest.mark.parametrize("name", ["relu", "leaky-0.1", "leaky-1"])
@pytest.mark.parametrize("family", ["crossing", "barely-crossing", "negative", "positive", "wide", "point"])
def test_reslope_from_any_base_equals_the_optimizable_relaxation(name, family):
    """alpha-crown builds each step's lines from a base relaxation computed once: the same lines."""
    rule_class, attributes = RULES[name]
    rule, bound = elementwise(rule_class, **attributes), interval_families()[family]
    slopes = torch.rand(1, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.6 - 0.3
    expected = rule.relax(bound, "optimizable", lower_slope=slopes)
    for mode in RELAXATION_MODES:
        found = rule.reslope(rule.relax(bound, mode), bound, slopes)
        for field in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept"):
            assert torch.equal(getattr(found, field), getattr(expected, field)), (mode, field)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "atan", "softsign"])
def test_s_shaped_lines_touch_the_function(name):
    rule = elementwise(RULES[name][0])
    families = interval_families()
    f = rule.forward
    crossing = families["wide"]
    relaxation = rule.relax(crossing)  # the papers' lines (CROWN, CNN-Cert)
    # crossing case: the upper line passes through (l, f(l)), the lower line through (u, f(u))
    l, u = crossing.lower, crossing.upper
    assert torch.allclose(relaxation.upper_slope * l + relaxation.upper_intercept, f(l), atol=1e-7)
    assert torch.allclose(relaxation.lower_slope * u + relaxation.lower_intercept, f(u), atol=1e-7)
    # one-sided cases: the chord passes through both ends
    positive = families["positive"]
    relaxation = rule.relax(positive)
    for end in (positive.lower, positive.upper):
        assert torch.allclose(relaxation.lower_slope * end + relaxation.lower_intercept, f(end), atol=1e-12)
    # a point: both lines are the tangent
    point = families["point"]
    relaxation = rule.relax(point)
    assert torch.allclose(relaxation.upper_slope, rule.derivative(point.lower))
    assert torch.allclose(relaxation.upper_intercept, relaxation.lower_intercept, atol=1e-15)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "atan", "softsign"])
def test_s_shaped_least_area_lines_are_never_looser_than_the_papers_and_tighter_on_wide_intervals(name):
    rule = elementwise(RULES[name][0])
    for family, bound in interval_families().items():
        middle = (bound.lower + bound.upper) / 2
        least_area, paper = rule.relax(bound, "optimizable"), rule.relax(bound, "adaptive")
        gap = lambda r: (r.upper_slope - r.lower_slope) * middle + r.upper_intercept - r.lower_intercept  # noqa: E731
        assert bool((gap(least_area) <= gap(paper) + 1e-12).all()), family
        if family == "wide":  # the papers' tangents overshoot f's range there
            assert bool((gap(least_area) < gap(paper) - 1e-3).any()), family


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "atan", "softsign"])
def test_s_shaped_optimizable_lines_start_at_the_least_area_ones_and_carry_gradients(name):
    rule = elementwise(RULES[name][0])
    for family, bound in interval_families().items():
        positions = rule.initial_parameters(bound).requires_grad_(True)
        optimized, adaptive = rule.relax(bound, "optimizable", lower_slope=positions), rule.relax(bound, "optimizable")
        for field in ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept"):
            assert torch.allclose(getattr(optimized, field), getattr(adaptive, field), atol=1e-9), (family, field)
    optimized.upper_intercept.sum().backward()
    assert positions.grad is not None


def test_s_shaped_relaxation_returns_the_bounds_dtype():
    bound = interval_families()["crossing"].to(torch.float32)
    relaxation = elementwise(Sigmoid).relax(bound)
    assert relaxation.upper_slope.dtype == torch.float32
    assert_sandwiched(elementwise(Sigmoid), bound.to(torch.float64),
                      type(relaxation)(*(t.double() for t in vars(relaxation).values())))


# ---- MaxPool ----------------------------------------------------------------------------------------

def maxpool(input_shape, output_shape, **attributes) -> MaxPool:
    return MaxPool.build(NodeInfo("pool", "MaxPool", attributes, ("x",), {}, (input_shape,), output_shape))


def window_boxes(shape: tuple[int, ...], seed: int = 0) -> dict[str, Interval]:
    """[2, *shape] boxes: mixed signs, all negative, with constant entries, and narrow."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda: torch.rand(2, *shape, generator=g, dtype=torch.float64)  # noqa: E731
    center = (rand() - 0.5) * 6
    radius = rand() * 2
    constant = radius.clone()
    constant.view(-1)[::3] = 0.0
    return {"mixed": Interval(center - radius, center + radius),
            "negative": Interval(-10 - radius * 3, -10 + radius),
            "constants": Interval(center - constant, center + constant),
            "narrow": Interval(center - radius * 1e-3, center + radius * 1e-3)}


POOLS = {
    "3x3/2 pad 1": ((1, 2, 5, 5), (1, 2, 3, 3),
                    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "2x2/2": ((1, 3, 4, 4), (1, 3, 2, 2), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "1d k3/1": ((1, 2, 6), (1, 2, 4), {"kernel_shape": [3]}),
}


@pytest.mark.parametrize("pool", POOLS)
def test_maxpool_window_lines_hold_on_sampled_windows(pool):
    input_shape, output_shape, attributes = POOLS[pool]
    rule = maxpool(input_shape, output_shape, **attributes)
    g = torch.Generator().manual_seed(4)
    for kind, box in window_boxes(input_shape).items():
        relaxation = rule.relax(box, "adaptive")
        t = torch.rand(1000, *box.lower.shape, generator=g, dtype=torch.float64)
        t[:200] = t[:200].round()  # vertices of the box
        x = box.lower + t * (box.upper - box.lower)
        y = rule.forward(x)
        linear = (relaxation.weights * rule.windows(x, 0.0)).sum(-1)
        assert (linear + relaxation.lower_intercept <= y + TOLERANCE).all(), kind
        assert (y <= linear + relaxation.upper_intercept + TOLERANCE).all(), kind
        assert (relaxation.weights >= 0).all()


def test_maxpool_upper_line_is_tight_at_the_vertex_of_the_largest_upper_bound():
    rule = maxpool((1, 1, 4, 4), (1, 1, 2, 2), kernel_shape=[2, 2], strides=[2, 2])
    box = window_boxes((1, 1, 4, 4), seed=3)["mixed"]
    relaxation = rule.relax(box)
    lower, upper = rule.windows(box.lower, 0.0), rule.windows(box.upper, 0.0)
    vertex = torch.where(upper == upper.amax(-1, keepdim=True), upper, lower)
    line = (relaxation.weights * vertex).sum(-1) + relaxation.upper_intercept
    assert torch.allclose(line, vertex.amax(-1), atol=1e-12)


def test_maxpool_window_lines_match_cnn_cert_by_hand_and_hold_at_every_vertex():
    rule = maxpool((1, 1, 8), (1, 1, 2), kernel_shape=[4], strides=[4])
    lower = torch.tensor([0.0, 0.0, -3.0, -1.0, 0.0, 0.9, 0.9, -5.0], dtype=torch.float64).view(1, 1, 1, 8)
    upper = torch.tensor([1.0, 1.0, -2.0, -0.5, 1.0, 3.0, 3.0, -4.0], dtype=torch.float64).view(1, 1, 1, 8)
    relaxation = rule.relax(Interval(lower, upper))
    # window 1: candidates 0 and 1, gamma = 0.5, weights sum to 1
    # window 2: gamma = (1 + 2 * 3 / 2.1 - 1) / (1 + 2 / 2.1) > min u = 1 is clipped to 1, weights sum > 1
    w = 2 / 2.1
    expected = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, w, w, 0.0]], dtype=torch.float64)
    assert torch.allclose(relaxation.weights.view(2, 4), expected)
    as_tensor = lambda *values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    assert torch.allclose(relaxation.upper_intercept.view(2), as_tensor(0.5, 1 - 2 * w * 0.9))
    assert torch.allclose(relaxation.lower_intercept.view(2), as_tensor(0.0, (1 - 2 * w) * 3.0))
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 8).view(-1, 1, 1, 8)
    x = lower + corners * (upper - lower)
    y, linear = rule.forward(x), (relaxation.weights * rule.windows(x, 0.0)).sum(-1)
    assert (linear + relaxation.lower_intercept <= y + 1e-12).all()
    assert (y <= linear + relaxation.upper_intercept + 1e-12).all()


def test_maxpool_is_exact_when_one_entry_dominates_its_window():
    rule = maxpool((1, 1, 4, 4), (1, 1, 2, 2), kernel_shape=[2, 2], strides=[2, 2])
    lower, upper = torch.full((1, 1, 1, 4, 4), -3.0), torch.full((1, 1, 1, 4, 4), 4.0)
    lower[..., ::2, ::2], upper[..., ::2, ::2] = 5.0, 6.0  # the top-left entry of every window
    relaxation = rule.relax(Interval(lower, upper))
    expected = torch.zeros(1, 1, 1, 2, 2, 4)
    expected[..., 0] = 1.0
    assert torch.equal(relaxation.weights, expected)
    assert torch.equal(relaxation.lower_intercept, torch.zeros(1, 1, 1, 2, 2))
    assert torch.equal(relaxation.upper_intercept, torch.zeros(1, 1, 1, 2, 2))


# ---- the example plugin -----------------------------------------------------------------------------

def test_example_plugin_registers_softsign_through_the_entry_point_group():
    module = load_plugin_module()
    registered = []
    module.verikit_layers(register=registered.append)
    assert registered == [module.Softsign] and module.Softsign.op_types == ("Softsign",)
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())
    assert project["project"]["name"] == "verikit-example" and "verikit" in project["project"]["dependencies"]
    assert project["project"]["entry-points"]["verikit"] == {"example_softsign": "verikit_example.softsign",
                                                             "example_clip": "verikit_example.clip"}


def test_softsign_interval_and_relaxation():
    rule = elementwise(SOFTSIGN)
    bound = interval_families()["wide"]
    image = rule.interval(bound)
    assert torch.allclose(image.lower, bound.lower / (1 + bound.lower.abs()))
    relaxation = rule.relax(bound)
    assert (relaxation.upper_slope > 0).all() and (relaxation.lower_slope > 0).all()
    assert_sandwiched(rule, bound, relaxation)
