"""Interpretation maps: CAM's spatial mean is the logit (torch and exported ONNX), GradCAM++ and IG agree
between the two, IG is complete, and a model without a GAP head gets one clear message for CAM."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from verikit.errors import VerikitError
from verikit.interpret import explain, from_sequential, load_network
from verikit.interpret.maps import cam_of, integrated_gradients
from verikit.trainers.architectures import build, initialise
from verikit.trainers.export import export_onnx

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def gap_model():
    return build("small-gap", SHAPE, 10, seed=3)


@pytest.fixture(scope="module")
def exported(gap_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("gap") / "gap.onnx"
    export_onnx(gap_model, SHAPE, path)
    return load_network(str(path))


def inputs(count: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_spatial_mean_of_cam_is_the_logit(gap_model, exported):
    x = inputs()
    with torch.no_grad():
        logits = gap_model(x)
        for network in (from_sequential(gap_model, SHAPE), exported):
            _, cams, _ = network.features_and_cam(x)
            assert cams.shape == (5, 10, 4, 4)
            assert torch.allclose(cams.mean(dim=(2, 3)), logits, atol=1e-5, rtol=1e-5)
            assert cams.std() > 0.01  # the maps vary over positions: the identity is not trivial


def test_maps_agree_between_torch_and_onnx(gap_model, exported):
    x, labels = inputs(3, seed=1), torch.tensor([0, 4, 9])
    torch_network = from_sequential(gap_model, SHAPE)
    for method in ("cam", "gradcam++", "ig"):
        ours, theirs = explain(torch_network, x, labels, method, 16), explain(exported, x, labels, method, 16)
        assert ours.shape == theirs.shape and float(ours.abs().max()) > 0
        assert torch.allclose(ours, theirs, atol=1e-5 * float(ours.abs().max()) + 1e-7), method
    assert (explain(exported, x, labels, "gradcam++") >= 0).all()


def test_integrated_gradients_are_complete(gap_model):
    network, x, labels = from_sequential(gap_model, SHAPE), inputs(4, seed=2), torch.tensor([1, 2, 3, 4])
    attributions = integrated_gradients(network, x, labels, steps=128)
    with torch.no_grad():
        change = (gap_model(x) - gap_model(torch.zeros_like(x)))[torch.arange(4), labels]
    assert torch.allclose(attributions.flatten(1).sum(1), change, atol=0.03 * float(change.abs().max()))


def test_cam_is_refused_without_a_gap_head_but_gradcam_and_ig_work(tmp_path):
    model = build("mnist-small", SHAPE, 10, seed=0)
    path = tmp_path / "plain.onnx"
    export_onnx(model, SHAPE, path)
    network, x, labels = load_network(str(path)), inputs(2), torch.tensor([0, 1])
    with pytest.raises(VerikitError, match="no global average pooling followed by a bias-free linear head"):
        explain(network, x, labels, "cam")
    assert explain(network, x, labels, "gradcam++").shape == (2, 7, 7)  # the last conv's map
    assert explain(network, x, labels, "ig", 8).shape == (2, 16, 16)


def test_a_biased_head_is_not_taken_for_a_cam_head():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    initialise(model)
    with torch.no_grad():
        model[3].bias.fill_(0.5)
    network = from_sequential(model, SHAPE)
    assert network.pooled_head is None and "bias-free" in network.why_no_cam
    with pytest.raises(VerikitError):
        cam_of(network, inputs(1), torch.tensor([0]))
