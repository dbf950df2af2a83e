"""The `interpret` and `trades` trainers: every objective is differentiable and decreases on a tiny run;
options and schedules follow the reference; attacks stay in the clipped box; the metrics are right on
maps whose answer is known."""
from __future__ import annotations

import pytest
import torch

from verikit.errors import VerikitError
from verikit.interpret import from_sequential
from verikit.trainers.ascent import sign_ascent
from verikit.interpret.metrics import StabilityOptions, cam_stability, kendall_tau, topk_intersection
from verikit.trainers.architectures import build
from verikit.trainers.base import Step
from verikit.trainers.config import build_options
from verikit.trainers.interpret import REFERENCE_STEPS, Interpret
from verikit.trainers.trades import Trades

SHAPE = (1, 8, 8)


def batch(count: int = 8):
    generator = torch.Generator().manual_seed(5)
    return torch.rand(count, *SHAPE, generator=generator), torch.randint(0, 10, (count,), generator=generator)


@pytest.mark.parametrize("trainer, variant", [(Interpret(), v) for v in ("int", "int-one", "int-adv", "int2",
                                                                         "int2-adv", "ig-norm")] + [(Trades(), "")])
def test_objective_is_differentiable_and_decreases(trainer, variant):
    torch.manual_seed(0)
    model = build("small-gap", SHAPE, 10, seed=1)
    extra = {"variant": variant, "discrepancy_weight": 0.05} if variant else {}
    options = build_options(trainer.Options, {"steps": 2, "step_size": 0.05, "lr": 3e-3, **extra})
    step = Step(eps=0.1, kappa=1.0, fraction=0.5, domain=(0.0, 1.0), target_eps=0.1, state={}, options=options)
    x, y = batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    losses = []
    for _ in range(8):
        loss, logits = trainer.loss(model, x, y, step)
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    fit = float(torch.nn.functional.cross_entropy(logits.detach(), y))
    assert float(loss.detach()) > fit - 1e-6  # the regulariser is at least 0


def test_interpret_options_default_to_the_reference_and_reject_unknown_variants():
    options = build_options(Interpret.Options, {"variant": "int2"})
    assert (options.lr, options.batch_size, options.steps, options.step_size, options.random_start) == (
        1e-4, 50, 40, 0.01, True)
    assert options.schedule.warmup == pytest.approx(2_000 / REFERENCE_STEPS) and options.schedule.lr_drops == ()
    assert build_options(Interpret.Options, {"ramp_end": 0.5}).schedule.warmup == pytest.approx(2_000 / 110_000)
    assert options.discrepancy_weight == 0.01
    with pytest.raises(VerikitError, match="unknown interpret variant"):
        Interpret().check(build_options(Interpret.Options, {"variant": "int3"}))


def test_sign_ascent_stays_in_the_clipped_box_with_per_input_radii():
    x = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.9, 0.95]])
    eps = torch.tensor([0.1, 0.3])
    point = sign_ascent(lambda z: (z * torch.tensor([1.0, -1.0, 1.0])).sum(), x, eps, 20, 0.04, random_start=True,
                        generator=torch.Generator().manual_seed(0))
    assert (point >= 0).all() and (point <= 1).all()
    assert ((point - x).abs() <= eps[:, None] + 1e-7).all()
    assert torch.allclose(point, torch.tensor([[0.1, 0.4, 1.0], [0.5, 0.6, 1.0]]))  # each ends at its corner


def test_kendall_tau_and_topk_intersection_on_known_maps():
    first = torch.arange(16.0).reshape(1, 4, 4)
    assert torch.allclose(kendall_tau(first, first * 3 + 1), torch.tensor([1.0], dtype=torch.float64))
    assert torch.allclose(kendall_tau(first, -first), torch.tensor([-1.0], dtype=torch.float64))
    shuffled = first.flatten().clone()
    shuffled[[15, 0]] = shuffled[[0, 15]]
    assert topk_intersection(first, shuffled.reshape(1, 4, 4), 4).item() == pytest.approx(0.75)
    assert topk_intersection(first, -first, 4).item() == 0.0


def test_the_topk_attack_moves_the_cam_of_a_random_net():
    model = build("small-gap", (1, 16, 16), 10, seed=2)
    network = from_sequential(model, (1, 16, 16))
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    small = cam_stability(network, x, y, 0.01, StabilityOptions(k=4, steps=5, step_size=0.005))
    large = cam_stability(network, x, y, 0.05, StabilityOptions(k=4, steps=20, step_size=0.005))
    assert small.kept == 8 and small.kendall_tau > 0.8 and small.intersection > 0.7
    assert large.kept >= 1 and large.kendall_tau < small.kendall_tau and large.intersection < small.intersection
