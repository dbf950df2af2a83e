"""Certified radius (CNN-Cert's log-space search): the radius returned certifies and the upper bracket
does not, the search follows the paper's steps, certified <= attacked radius, crown >= ibp on average."""
from __future__ import annotations

from math import e, exp, inf, log

import numpy as np
import pytest
import torch

from netgen import cnn, mlp
from verikit.methods.cnn_cert import CnnCertOptions
from verikit.onnx_import import load_model
from verikit.plugins import get_method
from verikit.radius import certified_radius, log_search, margin_rows
from verikit.region import Box, LpBall

F64 = torch.float64


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("radius")
    return {"mlp": load_model(mlp(folder / "mlp.onnx", "Relu", (12, 12), inputs=6, outputs=4, seed=3)),
            "cnn": load_model(cnn(folder / "cnn.onnx", "MaxPool", batchnorm=True, seed=4))}


def clean_point(graph, seed: int) -> tuple[torch.Tensor, int]:
    x0 = torch.rand(graph.input_size, generator=torch.Generator().manual_seed(seed), dtype=F64) - 0.5
    return x0, int(graph.to(F64).forward_flat(x0.unsqueeze(0)).argmax())


def lowest_margin(graph, x0, label, targets, norm, eps, method, options=None) -> float:
    rows = margin_rows(label, targets, graph.output_size)
    region = LpBall(x0.unsqueeze(0), torch.tensor([eps], dtype=F64), norm)
    method = get_method(method)
    return float(method.bound(graph, region, rows, options or method.default_options()).lower.min())


def test_log_search_follows_cnn_cert_steps():
    tried = []
    low, high = log_search(lambda eps: eps < 0.3, 0.05, 15, tried)
    radii = [eps for eps, _ in tried]
    assert radii[:3] == pytest.approx([0.05, 0.05 * e, 0.05 * e * e])  # up by a factor e until the first failure
    assert radii[3] == pytest.approx(exp((log(0.05 * e * e) + log(0.05 * e)) / 2))  # then halfway in log space
    assert len(tried) == 15 and exp(low) < 0.3 <= exp(high) and high - low < 1e-3
    assert all(passed == (eps < 0.3) for eps, passed in tried)


@pytest.mark.parametrize("norm", ["inf", "2", "1"])
@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_radius_certifies_and_upper_bracket_does_not(networks, family, norm):
    graph = networks[family]
    x0, label = clean_point(graph, seed=1)
    options = CnnCertOptions(mode="ada", dtype="float64")
    result = certified_radius(graph, x0, label, norm=norm, options=options, attack_steps=6)
    norm_value = {"inf": inf, "2": 2.0, "1": 1.0}[norm]
    assert len(result.history) == 15 and result.history[0][0] == pytest.approx(0.05)
    assert 0 < result.certified < result.upper_bracket < inf
    assert result.upper_bracket / result.certified < 1.01  # 15 steps bisect the bracket finely
    assert lowest_margin(graph, x0, label, result.targets, norm_value, result.certified, "cnn-cert", options) > 0
    assert lowest_margin(graph, x0, label, result.targets, norm_value, result.upper_bracket, "cnn-cert", options) <= 0
    assert result.certified <= result.attack_radius < inf
    adversarial = graph.to(F64).forward_flat(result.adversarial.unsqueeze(0))[0]
    assert float(adversarial[label]) < float(adversarial[list(result.targets)].max())
    assert float(torch.linalg.vector_norm(result.adversarial - x0, ord=norm_value)) <= result.attack_radius + 1e-12


@pytest.mark.parametrize("method", ["ibp", "fast-lin", "crown", "cnn-cert"])
def test_certified_radius_never_exceeds_the_attack_radius(networks, method):
    for family, graph in networks.items():
        for seed, norm in ((2, "inf"), (3, "2"), (4, "1")):
            x0, label = clean_point(graph, seed)
            target = (label + 1) % graph.output_size
            result = certified_radius(graph, x0, label, target=target, norm=norm, method=method, steps=10,
                                      attack_steps=6, domain=(-1.0, 1.0))
            assert result.targets == (target,)
            assert result.certified <= result.attack_radius, (family, seed, norm, result)


def test_crown_radius_beats_ibp_on_average(tmp_path):
    radii = {"ibp": [], "crown": []}
    for seed in range(5):
        graph = load_model(mlp(tmp_path / f"m{seed}.onnx", "Relu", (16, 16), inputs=8, outputs=4, seed=seed))
        x0, label = clean_point(graph, seed)
        for method in radii:
            radii[method].append(certified_radius(graph, x0, label, method=method, attack=False).certified)
    assert np.mean(radii["crown"]) > 1.5 * np.mean(radii["ibp"]), radii


def test_misclassified_point_has_radius_zero(networks):
    graph = networks["mlp"]
    x0, label = clean_point(graph, seed=5)
    wrong = (label + 1) % graph.output_size
    result = certified_radius(graph, x0, wrong)
    assert result.certified == 0.0 and result.upper_bracket == 0.0 and result.attack_radius == 0.0


def test_domain_box_clips_the_ball(networks):
    """With a domain that pins every input but one, the radius grows (or stays): fewer directions."""
    graph = networks["mlp"]
    x0, label = clean_point(graph, seed=6)
    free = certified_radius(graph, x0, label, method="crown", attack=False)
    lower, upper = x0.clone(), x0.clone()
    lower[0], upper[0] = -10.0, 10.0
    pinned = certified_radius(graph, x0, label, method="crown", attack=False,
                              domain=Box(lower.unsqueeze(0), upper.unsqueeze(0)))
    assert pinned.certified >= free.certified
