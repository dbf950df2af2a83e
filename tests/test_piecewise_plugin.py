"""A third party's piecewise-linear activation gets every method: the example plugin's Clip (two kinks)
is split by `bab`, encoded exactly by `milp`, given optimised lines by `alpha-crown`, and no method
names an op. (The plugin is installed by CI: pip install -e ./plugins/verikit-example.)"""
from __future__ import annotations

import ast
import importlib.metadata
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from netgen import NetBuilder
from verikit.api import load_model
from verikit.bounds import Interval
from verikit.methods.bab import BaBOptions, BranchAndBound
from verikit.methods.milp import MILP
from verikit.plugins import get_method, registry
from verikit.region import Box
from verikit.spec.property import OutputClause, Property, RegionSpec

METHODS = Path(__file__).resolve().parents[1] / "verikit" / "methods"
F64 = torch.float64


def _installed() -> bool:
    try:
        importlib.metadata.distribution("verikit-example")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_plugin = pytest.mark.skipif(not _installed(), reason="pip install -e ./plugins/verikit-example (CI does)")


def _clip_net(path: Path, seed: int, inputs: int = 2) -> Path:
    """Gemm -> Clip(-0.3, 0.6) -> Gemm -> Clip(0, 1) (a ReLU6-like one) -> Gemm."""
    net = NetBuilder((1, inputs), seed)
    for width, (low, high) in ((10, (-0.3, 0.6)), (8, (0.0, 1.0))):
        net.gemm(width)
        net.op("Clip", net.constant(np.array(low)), net.constant(np.array(high)))
    net.gemm(2)
    return net.save(path)


def _threshold(graph, threshold: float) -> Property:
    """Unsafe iff Y_0 >= threshold over [-1, 1]^n."""
    n = graph.input_size
    clause = OutputClause(torch.tensor([[-1.0, 0.0]], dtype=F64), torch.tensor([-threshold], dtype=F64))
    box = Box(-torch.ones(1, n, dtype=F64), torch.ones(1, n, dtype=F64))
    return Property(n, 2, (RegionSpec(box, (clause,)),))


def _grid_max(graph) -> float:
    axis = torch.linspace(-1, 1, 401, dtype=F64)
    with torch.no_grad():
        return float(graph.to(F64).forward_flat(torch.cartesian_prod(axis, axis))[:, 0].max())


@needs_plugin
@pytest.mark.parametrize("mode", ["same-slope", "adaptive", "zero", "optimizable"])
def test_clip_lines_sandwich_the_function(mode):
    rule = registry().layer("Clip").provider
    clip = object.__new__(rule)
    clip.low, clip.high, clip.kinks = -0.3, 0.6, (-0.3, 0.6)
    generator = torch.Generator().manual_seed(0)
    ends = (torch.rand(2, 4000, generator=generator, dtype=F64) - 0.5) * 3
    bound = Interval(ends.min(0).values, ends.max(0).values)
    parameters = torch.rand(4000, generator=generator, dtype=F64)
    lines = clip.relax(bound, mode, parameters)
    t = torch.rand(64, 1, generator=generator, dtype=F64)
    z = bound.lower + t * (bound.upper - bound.lower)
    y = clip.forward(z)
    assert bool((lines.lower_slope * z + lines.lower_intercept <= y + 1e-12).all())
    assert bool((lines.upper_slope * z + lines.upper_intercept >= y - 1e-12).all())
    exact = ~clip.unstable(bound)  # no kink inside: both lines are the function itself
    assert torch.allclose((lines.lower_slope * z + lines.lower_intercept)[:, exact], y[:, exact])


@needs_plugin
@pytest.mark.parametrize("seed", [0, 1])
def test_bab_and_milp_agree_with_brute_force(tmp_path, seed):
    graph = load_model(_clip_net(tmp_path / "clip.onnx", seed))
    top = _grid_max(graph)
    for margin, expected in ((0.02, "unsat"), (-0.02, "sat")):
        prop = _threshold(graph, top + margin)
        for method in (BranchAndBound(), MILP()):
            options = BaBOptions(workers=1) if isinstance(method, BranchAndBound) else None
            verdict = method.decide(graph, prop, options, time.monotonic() + 60)
            assert verdict.status == expected, (type(method).__name__, margin, verdict)
            if expected == "sat":
                assert prop.is_counterexample(*verdict.counterexample)


@needs_plugin
def test_relu_splitting_splits_at_the_clip_kinks(tmp_path):
    graph = load_model(_clip_net(tmp_path / "clip.onnx", 0))
    prop = _threshold(graph, _grid_max(graph) + 0.02)
    from verikit.methods.relu_split import _relu_layers

    layers = _relu_layers(graph)
    assert [layer.rule.kinks for layer in layers] == [pytest.approx((-0.3, 0.6)), (0.0, 1.0)]  # float32 constants
    verdict = BranchAndBound().decide(graph, prop, BaBOptions(max_inputs=0, workers=1), time.monotonic() + 60)
    assert verdict.status == "unsat" and "ReLU splitting" in verdict.detail


@needs_plugin
def test_alpha_crown_is_at_least_as_tight_as_crown(tmp_path):
    graph = load_model(_clip_net(tmp_path / "clip.onnx", 1, inputs=4))
    box = Box(-torch.ones(1, 4), torch.ones(1, 4))
    rows = torch.eye(2).unsqueeze(0)
    crown = get_method("crown").bound(graph, box, rows)
    alpha = get_method("alpha-crown").bound(graph, box, rows)
    assert bool((alpha.lower >= crown.lower - 1e-5).all() and (alpha.upper <= crown.upper + 1e-5).all())
    assert float((alpha.upper - alpha.lower).sum()) < float((crown.upper - crown.lower).sum())
    points = box.sample(5000, torch.Generator().manual_seed(2))[0]
    with torch.no_grad():
        values = graph.forward_flat(points)
    assert bool((values >= alpha.lower - 1e-5).all() and (values <= alpha.upper + 1e-5).all())


def test_no_method_names_an_op():
    ops = set(registry().entries["layer"])
    for path in sorted(METHODS.glob("*.py")):
        named = {node.value for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Constant) and node.value in ops}
        assert not named, f"{path.name} names ops {sorted(named)}: ask the layer rule instead"


def _register_softplus(monkeypatch):
    """A plugin rule for Softplus that evaluates and bounds by intervals only (no backward rule, no lines)."""
    from verikit.layers.base import ElementwiseRule, LayerRule
    from verikit.plugins import Registration

    class Softplus(ElementwiseRule):
        op_types = ("Softplus",)
        backward = LayerRule.backward  # the base's: not offered

        @classmethod
        def build(cls, node):
            return cls(node)

        def forward(self, x):
            return torch.nn.functional.softplus(x)

    monkeypatch.setitem(registry().entries["layer"], "Softplus",
                        Registration("Softplus", "layer", Softplus, "softplus_test", "tests"))


def test_a_missing_capability_is_one_error_before_any_bound(tmp_path, monkeypatch):
    from verikit.errors import PluginError
    from verikit.pipeline import VerifyOptions, verify

    _register_softplus(monkeypatch)
    net = NetBuilder((1, 3), 0)
    net.gemm(5)
    net.op("Softplus")
    net.gemm(2)
    graph = load_model(net.save(tmp_path / "softplus.onnx"))
    prop = _threshold(graph, 10.0)
    monkeypatch.setattr(get_method("crown"), "bound", lambda *a, **k: pytest.fail("bounded before the check"))
    with pytest.raises(PluginError) as raised:
        verify(graph, prop, VerifyOptions(timeout=5, methods=("crown",), workers=1))
    message = str(raised.value)
    for part in ("crown", "`backward`", "Softplus", "softplus_test", "ibp"):
        assert part in message, message
    default = verify(graph, prop, VerifyOptions(timeout=5, workers=1))  # the methods that can, only
    assert default.status in ("unsat", "unknown", "timeout") and default.method in ("ibp", "")
