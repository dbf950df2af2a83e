"""Training bounds come from verikit's engines: gradients match finite differences, the training-time
bound equals `verikit.bound` on the exported model, and SingleProp's radius rules are as the paper says."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import verikit
from verikit.propagate.interval import interval_pass
from verikit.region import Box
from verikit.trainers import singleprop
from verikit.trainers.architectures import Residual, build, initialise
from verikit.trainers.engine import LiveGraph, crown_ibp_margin, crown_margin, ibp_margin, input_box, margin_rows
from verikit.trainers.export import export_onnx
from verikit.trainers.run import train

pytest.importorskip("sklearn")


def tiny_net(dtype=torch.float64, residual: bool = False) -> nn.Sequential:
    torch.manual_seed(3)
    block = [Residual(nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))] if residual else []
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), *block, nn.ReLU(), nn.Flatten(),
                          nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 4))
    initialise(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.bias.normal_(0, 0.3)  # nonzero biases: their gradients are checked too
    return model.to(dtype)


@pytest.mark.parametrize("which,residual", [("ibp", False), ("crown", False), ("crown-ibp", False),
                                           ("crown", True)])
def test_bound_gradients_match_finite_differences(which, residual):
    model = tiny_net(residual=residual)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 2])
    rows = margin_rows(y, 4, torch.float64)

    def objective() -> torch.Tensor:
        graph, box = LiveGraph(model, (1, 4, 4)).graph(), input_box(x, 0.05, (0.0, 1.0))
        if which == "ibp":
            return ibp_margin(graph, box, rows, torch.float64).sum()
        if which == "crown":
            return crown_margin(graph, box, rows, torch.float64).sum()
        return crown_ibp_margin(graph, box, rows, 0.5, torch.float64).sum()

    model.zero_grad()
    objective().backward()
    step = 1e-6
    for parameter in model.parameters():
        for index in range(min(3, parameter.numel())):
            flat = parameter.data.view(-1)
            original = float(flat[index])
            with torch.no_grad():
                flat[index] = original + step
                up = float(objective())
                flat[index] = original - step
                down = float(objective())
                flat[index] = original
            assert parameter.grad.view(-1)[index] == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("arch", ["mnist-small", "mnist-resnet"])
def test_training_bound_equals_verikit_bound_on_exported_model(tmp_path, arch):
    model = build(arch, (1, 8, 8), 10, seed=0)
    model = train("ibp", "digits", model, epochs=1, eps=0.05, batch_size=200)
    path = export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    graph = verikit.load_model(path)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 4, 7])
    box, rows = input_box(x, 0.02, (0.0, 1.0)), margin_rows(y, 10)
    live = LiveGraph(model, (1, 8, 8)).graph()
    with torch.no_grad():
        ours = {"ibp": ibp_margin(live, box, rows), "crown": crown_margin(live, box, rows)}
    for method, lower in ours.items():
        theirs = verikit.bound(graph, Box(box.lower, box.upper), method=method, coefficients=rows).lower
        assert torch.allclose(lower, theirs, rtol=1e-4, atol=1e-4), method


def test_singleprop_first_layer_radius_equals_ibp():
    model = tiny_net()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    _, radius = singleprop.propagate(model[:1], x, 0.1)
    bounds = interval_pass(LiveGraph(model, (1, 4, 4)).graph(), Box((x - 0.1).flatten(1), (x + 0.1).flatten(1)))
    first = bounds["v0"]  # unclipped box, as the reference propagates eps itself
    assert torch.allclose(radius, first.radius.reshape(radius.shape), atol=1e-12)


def test_relu_radius_maps_match_closed_forms():
    z = torch.linspace(-2, 2, 41, dtype=torch.float64).repeat_interleave(3)
    v = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64).repeat(41)
    lower, upper = z - v, z + v
    slope = upper / (upper - lower)
    expected = {
        "fast-lin": slope * (3 * v - z) / 2,  # half-width of s x <= relu <= s (x - l) on [l, u]
        "zero": upper / 2,
        "crown": torch.where(z >= 0, v, upper / 2),
    }
    for rule, unstable in expected.items():
        want = torch.where(lower >= 0, v, torch.where(upper <= 0, 0.0, unstable))
        assert torch.allclose(singleprop.relu_radius(z, v, rule), want, atol=1e-12), rule
    # a point interval keeps radius 0
    assert float(singleprop.relu_radius(z, torch.zeros_like(z), "fast-lin").abs().max()) == 0.0


def test_maxpool_radius_rule():
    center, radius = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    model = nn.Sequential(nn.MaxPool2d(2))
    c, r = singleprop.propagate(model, center, radius)
    pool = nn.MaxPool2d(2)
    assert torch.equal(c, pool(center))
    assert torch.allclose(r, (pool(center + radius) - pool(center - radius)) / 2)


def test_residual_radii_add():
    """x + conv(relu(x)): the radius is the skip's plus |W| applied to the ReLU's radius."""
    center, radius = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.rand(2, 3, 4, 4, dtype=torch.float64)
    conv = nn.Conv2d(3, 3, 3, padding=1).double()
    model = nn.Sequential(Residual(nn.ReLU(), conv))
    for rule in singleprop.RELU_RULES:
        c, r = singleprop.propagate(model, center, radius, rule)
        inner = singleprop.relu_radius(center, radius, rule)
        assert torch.allclose(c, center + conv(torch.relu(center)))
        assert torch.allclose(r, radius + nn.functional.conv2d(inner, conv.weight.abs(), None, 1, 1))


def test_singleprop_costs_one_extra_forward_pass(monkeypatch):
    model = build("mnist-small", (1, 8, 8), 10)
    calls = {"n": 0}
    for name in ("conv2d", "linear"):
        original = getattr(torch.nn.functional, name)

        def counted(*args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, name, counted)
    x = torch.rand(4, 1, 8, 8)
    model(x)
    clean = calls["n"]
    calls["n"] = 0
    singleprop.propagate(model, x, 0.1)
    assert clean == 4 and calls["n"] == 2 * clean
