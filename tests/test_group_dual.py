"""group-dual: sound against exact MILP optima, sampled and attacked points; never looser than CROWN;
exact on a single group; refused (clearly) where it does not apply; decides what alpha-crown cannot."""
from __future__ import annotations

import pytest
import torch

from conftest import benchmark_instances
from netgen import NetBuilder, mlp, tiny_net
from test_milp import attacked_extremes
from verikit.api import load_model, load_spec
from verikit.errors import PluginError
from verikit.methods.group_dual import GroupDual
from verikit.methods.milp import MILP
from verikit.pipeline import VerifyOptions, verify
from verikit.plugins import get_method
from verikit.region import Box, LpBall
from verikit.spec.property import OutputClause, Property, RegionSpec

F64 = torch.float64


def patch_net(path, seed: int = 0, activation: str = "Relu"):
    """A one-channel 5x5 image -> 2x2 conv, 4 channels -> ReLU -> 2x2 average pool -> dense 3: every
    neuron reads a 2x2 patch, as in verivital's avgpool net."""
    net = NetBuilder((1, 1, 5, 5), seed)
    net.conv(4, kernel=2)
    net.op(activation, **({"alpha": 0.1} if activation == "LeakyRelu" else {}))
    net.pool("AveragePool", kernel=2, stride=2)
    net.flatten()
    net.gemm(3)
    return load_model(net.save(path)).to(F64)


def random_box(graph, radius: float, seed: int) -> Box:
    center = torch.rand(1, graph.input_size, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return Box(center - radius, center + radius)


@pytest.mark.parametrize("seed,activation", [(0, "Relu"), (1, "Relu"), (2, "LeakyRelu")])
def test_sound_against_milp_and_attacks_and_never_looser_than_crown(tmp_path, seed, activation):
    graph = patch_net(tmp_path / "patch.onnx", seed, activation)
    region = random_box(graph, 0.3, seed)
    rows = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]], dtype=F64)
    found = GroupDual().bound(graph, region, rows.unsqueeze(0))
    crown = get_method("crown").bound(graph, region, rows.unsqueeze(0))
    alpha = get_method("alpha-crown").bound(graph, region, rows.unsqueeze(0))
    gained = 0.0
    for k, row in enumerate(rows):
        lowest, highest = MILP().minimize(graph, region, row).value, -MILP().minimize(graph, region, -row).value
        sampled = attacked_extremes(graph, region, row)
        assert float(found.lower[0, k]) <= lowest + 1e-7 and highest <= float(found.upper[0, k]) + 1e-7
        assert lowest <= sampled[0] + 1e-7 and sampled[1] <= highest + 1e-7
        assert float(found.lower[0, k]) >= float(crown.lower[0, k]) - 1e-6
        assert float(found.upper[0, k]) <= float(crown.upper[0, k]) + 1e-6
        gained += float(found.lower[0, k] - alpha.lower[0, k]) + float(alpha.upper[0, k] - found.upper[0, k])
    assert gained > 0  # tighter than alpha-crown's single-neuron relaxation, over these rows


def test_groups_cut_smaller_stay_sound_and_lose_little(tmp_path, monkeypatch):
    graph = patch_net(tmp_path / "patch.onnx", seed=1)
    region = random_box(graph, 0.3, 1)
    row = torch.tensor([1.0, -1.0, 0.0], dtype=F64)
    whole = float(GroupDual().bound(graph, region, row.reshape(1, 1, -1)).lower)
    monkeypatch.setattr("verikit.methods.group_dual.MAX_GROUP_NEURONS", 2)  # 4 channels: 2 groups a patch
    cut = float(GroupDual().bound(graph, region, row.reshape(1, 1, -1)).lower)
    crown = float(get_method("crown").bound(graph, region, row.reshape(1, 1, -1)).lower)
    assert crown - 1e-6 <= cut <= whole + 1e-6 and cut <= MILP().minimize(graph, region, row).value + 1e-7
    assert cut < whole - 1e-6  # the cut groups lose the pairs' joint shape


def test_sound_over_an_l2_ball(tmp_path):
    graph = patch_net(tmp_path / "patch.onnx", seed=3)
    center = random_box(graph, 0.0, 3).lower
    region = LpBall(center, torch.tensor([1.0], dtype=F64), 2.0)
    row = torch.tensor([1.0, -1.0, 0.0], dtype=F64)
    found = GroupDual().bound(graph, region, row.reshape(1, 1, -1))
    x = region.sample(2000, torch.Generator().manual_seed(4))[0]
    for _ in range(30):  # signed-gradient descent of the row, projected back into the ball
        x.requires_grad_(True)
        (gradient,) = torch.autograd.grad((graph.forward_flat(x) @ row).sum(), x)
        x = region.project((x - 0.05 * gradient.sign()).unsqueeze(0))[0].detach()
    with torch.no_grad():
        assert float(found.lower) <= float((graph.forward_flat(x) @ row).min()) + 1e-9
    assert float(found.lower) > float(get_method("ibp").bound(graph, region, row.reshape(1, 1, -1).float()).lower)


def test_one_group_is_exact(tmp_path):
    # y = 2 relu(x1 + x2 + 0.5) - relu(x1 - x2) + 0.25 on [-1, 1]^2: both neurons read (x1, x2), so the
    # one group's term is the exact range [-1.25, 5.25]; the triangle LP (and CROWN) give -1.5 below.
    graph = load_model(tiny_net(tmp_path / "tiny.onnx"))
    region = Box(-torch.ones(1, 2), torch.ones(1, 2))
    found = GroupDual().bound(graph, region, torch.ones(1, 1, 1))
    assert float(found.lower) == pytest.approx(-1.25, abs=1e-4) and float(found.lower) <= -1.25 + 1e-9
    assert float(found.upper) == pytest.approx(5.25, abs=1e-4) and float(found.upper) >= 5.25 - 1e-9
    assert float(get_method("crown").bound(graph, region, torch.ones(1, 1, 1)).lower) < -1.4


def test_refused_clearly_where_it_does_not_apply(tmp_path):
    deep = load_model(mlp(tmp_path / "deep.onnx", widths=(8, 8)))  # two ReLU layers
    wide = load_model(mlp(tmp_path / "wide.onnx", widths=(8,), inputs=6))  # every neuron reads 6 inputs
    for graph, why in ((deep, "this network has 2 .Relu"), (wide, "read more than 4 inputs")):
        assert not GroupDual().applies(graph)
        with pytest.raises(PluginError, match=why) as refused:
            GroupDual().bound(graph, random_box(graph, 0.1, 0), torch.ones(1, 1, 3))
        assert graph.source in str(refused.value) and "alpha-crown" in str(refused.value)
    assert GroupDual().applies(load_model(mlp(tmp_path / "narrow.onnx", widths=(8,), inputs=4)))


def test_verify_skips_it_by_default_where_it_does_not_apply(tmp_path):
    graph = load_model(mlp(tmp_path / "deep.onnx", widths=(8, 8)))
    region = random_box(graph, 0.5, 1)
    clause = OutputClause(torch.tensor([[1.0, -1.0, 0.0]], dtype=F64), torch.tensor([-100.0], dtype=F64))
    prop = Property(graph.input_size, 3, (RegionSpec(region, (clause,)),))
    verdict = verify(graph, prop, VerifyOptions(timeout=20, attack=None))
    assert verdict.status == "unsat" and verdict.method != "group-dual"


def test_decides_verivital_avgpool_beyond_alpha_crown(benchmarks):
    row = next(r for r in benchmark_instances("verivital") if r["vnnlib"].endswith("avgpool_specs/prop_7_0.04.vnnlib"))
    graph = load_model(row["onnx"])
    prop = load_spec(row["vnnlib"], graph)
    spec = prop.regions[0]
    rows = torch.cat([c.coefficients for c in spec.clauses]).unsqueeze(0)
    rhs = torch.cat([c.rhs for c in spec.clauses])
    alpha = get_method("alpha-crown").bound(graph, spec.region, rows.float()).lower[0].double() - rhs
    assert bool((alpha <= 0).any())  # the premise: single-neuron relaxations leave a clause open
    found = GroupDual().bound(graph, spec.region, rows).lower[0] - rhs
    assert bool((found > 0).all()) and bool((found >= alpha - 1e-5).all())
    graph64 = graph.to(F64)
    for k in (alpha <= 0).nonzero()[:, 0].tolist():  # below every attacked value of those rows
        assert float(found[k]) <= attacked_extremes(graph64, spec.region.to(F64), rows[0, k], 20)[0] - float(rhs[k])
    verdict = verify(graph, prop, VerifyOptions(timeout=60))
    assert verdict.status == "unsat" and row["expected"] == "unsat"
