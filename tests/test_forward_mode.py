"""Forward-mode linear bounds and the re-bounding of unstable (problem, neuron) pairs: sound on random
nets of every op family the forward mode takes (sampled points), never looser than interval
propagation, exact on affine nets, and the per-pair back-substitution equal to the batched one."""
from __future__ import annotations

import pytest
import torch

from netgen import NetBuilder, every_family
from verikit.onnx_import import load_model
from verikit.propagate import backward
from verikit.propagate.backward import layer_bounds, values_to_relax
from verikit.propagate.forward import bounds_by_forward_mode, supports_forward_mode
from verikit.region import Box

F64 = torch.float64


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forward")
    return {name: load_model(path) for name, path in every_family(folder).items()}


def _boxes(graph, count: int, width: float, seed: int = 0) -> Box:
    generator = torch.Generator().manual_seed(seed)
    centre = torch.rand(count, graph.input_size, generator=generator, dtype=F64) * 2 - 1
    return Box(centre - width, centre + width)


def test_which_graphs_take_forward_mode(networks):
    assert supports_forward_mode(networks["relu-mlp"]) and supports_forward_mode(networks["residual-identity"])
    assert not supports_forward_mode(networks["cnn-maxpool"])  # MaxPool is not elementwise


@pytest.mark.parametrize("name", ["relu-mlp", "leaky-mlp", "sigmoid-mlp", "tanh-mlp", "atan-mlp",
                                  "cnn-avgpool-bn", "cnn-sigmoid", "residual-identity", "residual-projection"])
def test_sound_and_within_interval_propagation(networks, name):
    graph = networks[name].to(F64)
    box = _boxes(graph, 3, 0.2)
    bounds = bounds_by_forward_mode(graph, box)
    samples = box.lower.unsqueeze(1) + (box.upper - box.lower).unsqueeze(1) * torch.rand(3, 300, graph.input_size,
                                                                                          dtype=F64)
    with torch.no_grad():
        values = graph.forward(samples.reshape(-1, graph.input_size), keep_all=True)
    for node in graph.nodes:
        value = values[node.output].reshape(3, 300, -1)
        bound = bounds[node.output]
        lower, upper = bound.lower.flatten(1).unsqueeze(1), bound.upper.flatten(1).unsqueeze(1)
        assert bool((value >= lower - 1e-9).all() and (value <= upper + 1e-9).all()), node.name
        interval = node.rule.interval(*(bounds[n] for n in node.inputs))
        assert bool((bound.lower >= interval.lower - 1e-12).all() and (bound.upper <= interval.upper + 1e-12).all())


def test_exact_on_an_affine_net(tmp_path):
    net = NetBuilder((1, 3), seed=4)
    net.gemm(5)
    net.op("Mul", net.constant(torch.tensor([2.0]).numpy()), shape=(1, 5))
    net.gemm(2)
    graph = load_model(net.save(tmp_path / "affine.onnx")).to(F64)
    box = _boxes(graph, 2, 0.3)
    bound = bounds_by_forward_mode(graph, box)[graph.output_name]
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=F64)] * 3)
    for problem in range(2):
        points = box.lower[problem] + corners * (box.upper - box.lower)[problem]
        outputs = graph.forward_flat(points)
        assert torch.allclose(bound.lower[problem].flatten(), outputs.min(0).values, atol=1e-10)
        assert torch.allclose(bound.upper[problem].flatten(), outputs.max(0).values, atol=1e-10)


def test_per_pair_rebounding_equals_batched_back_substitution(networks, monkeypatch):
    """With the forward-mode bounds as reference, re-bounding only the unstable pairs (each its own
    problem) gives the same bound as back-substituting every neuron, on every unstable pair."""
    graph = networks["relu-mlp"].to(F64)
    box = _boxes(graph, 64, 0.05, seed=3)  # small boxes: few unstable neurons each
    reference = bounds_by_forward_mode(graph, box)
    calls = []
    original = backward._rebound_pairs
    monkeypatch.setattr(backward, "_rebound_pairs", lambda *a, **k: calls.append(1) or original(*a, **k))
    sparse = layer_bounds(graph, box, "adaptive", {}, reference=reference, skip_stable=True)
    assert calls  # the per-pair path ran
    for name in values_to_relax(graph):
        kept = reference[name]
        unstable = (kept.lower < 0) & (kept.upper > 0)
        known = {k: v for k, v in sparse.items() if k != name and k in values_to_relax(graph)}
        dense = layer_bounds(graph, box, "adaptive", known)[name].intersect(kept)
        assert torch.allclose(sparse[name].lower[unstable], dense.lower[unstable], atol=1e-9)
        assert torch.allclose(sparse[name].upper[unstable], dense.upper[unstable], atol=1e-9)
        assert bool((sparse[name].lower >= kept.lower).all() and (sparse[name].upper <= kept.upper).all())
