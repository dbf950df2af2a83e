"""IBP soundness: on random nets of every op family, the bounds of every value contain the values at
1,000 sampled points and at PGD-maximised and -minimised points of the region."""
from __future__ import annotations

import pytest
import torch

from netgen import every_family
from verikit.api import bound, load_model
from verikit.methods.ibp import IBP
from verikit.propagate.interval import interval_pass
from verikit.region import Box, LpBall


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    return every_family(tmp_path_factory.mktemp("nets"))


def _regions(n: int):
    g = torch.Generator().manual_seed(0)
    center = torch.rand(1, n, generator=g) * 2 - 1
    yield "box", Box(center - 0.3, center + 0.3)
    for norm, radius in ((float("inf"), 0.2), (2.0, 0.5), (1.0, 0.8)):
        yield f"l{norm}", LpBall(center, torch.tensor([radius]), norm, Box(center - 0.45, center + 0.45))


def _attacked_outputs(graph, region, steps: int = 30) -> torch.Tensor:
    """Outputs at points that gradient steps push to each output's max and min."""
    n_out = graph.output_size
    x = region.sample(2 * n_out, torch.Generator().manual_seed(1))[0].double()
    signs = torch.cat([torch.eye(n_out), -torch.eye(n_out)]).double()
    g64 = graph.to(torch.float64)
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad((g64.forward_flat(x) * signs).sum(), x)
        with torch.no_grad():
            x = region.project((x + 0.05 * grad.sign()).unsqueeze(0))[0]
    with torch.no_grad():
        return g64.forward_flat(x)


@pytest.mark.parametrize("family", ["relu-mlp", "leaky-mlp", "sigmoid-mlp", "tanh-mlp", "atan-mlp",
                                    "cnn-avgpool-bn", "cnn-maxpool", "cnn-sigmoid", "residual-identity",
                                    "residual-projection"])
def test_ibp_contains_sampled_and_attacked_values(networks, family):
    graph = load_model(networks[family])
    for name, region in _regions(graph.input_size):
        region64 = region.to(torch.float64)
        bounds = interval_pass(graph.to(torch.float64), region64.bounding_box())
        points = region64.sample(1000, torch.Generator().manual_seed(2))[0]
        with torch.no_grad():
            values = graph.to(torch.float64).forward(points, keep_all=True)
        for value, tensor in values.items():
            box = bounds[value]
            assert box.contains(tensor), f"{family}/{name}: value {value} escapes its IBP bound"
        output = bound(graph, region, method="ibp")
        attacked = _attacked_outputs(graph, region64)
        assert output.contains(attacked.float(), tolerance=1e-4), f"{family}/{name}: attacked output escapes"
        assert output.contains(values[graph.output_name].flatten(1).float(), tolerance=1e-4)


def test_ibp_is_exact_on_an_affine_net(networks):
    """With no nonlinearity, each output's IBP bound over a box is attained at a corner."""
    from netgen import NetBuilder

    net = NetBuilder((1, 3), seed=3)
    net.gemm(2)
    path = net.save(networks["relu-mlp"].parent / "affine.onnx")
    graph = load_model(path)
    region = Box(torch.zeros(1, 3), torch.ones(1, 3))
    result = IBP().bound(graph, region, torch.eye(2).unsqueeze(0))
    corners = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.float32)
    outputs = graph.forward_flat(corners)
    assert torch.allclose(result.upper[0], outputs.max(0).values, atol=1e-5)
    assert torch.allclose(result.lower[0], outputs.min(0).values, atol=1e-5)
