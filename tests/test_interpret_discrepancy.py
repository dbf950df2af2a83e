"""The discrepancy measures: the paper's 2-class l1 inequality under real PGD attacks on random GAP nets,
the soft target weights, and ISA driving a 1-class discrepancy below the floor that bounds every 2-class
one (the "proper measurement" claim)."""
from __future__ import annotations

import torch

from verikit.interpret import from_sequential
from verikit.interpret.discrepancy import class_distances, measure, pick, soft_target_weights
from verikit.interpret.sneaking import SneakingOptions, minimal_eps, sneaking_attack
from verikit.trainers.architectures import build
from verikit.trainers.baselines import PGDOptions, pgd

SHAPE = (1, 8, 8)  # CAM maps of 2 x 2 (HW = 4)


def test_two_class_l1_discrepancy_is_at_least_hw_times_half_the_margin_when_the_label_flips():
    flipped = 0
    for seed in range(4):
        model = build("small-gap", SHAPE, 10, seed=seed)
        network = from_sequential(model, SHAPE)
        x = torch.rand(24, *SHAPE, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            _, clean_cam, clean_logits = network.features_and_cam(x)
        y = clean_logits.argmax(1)
        attacked = pgd(model, x, y, 0.3, PGDOptions(steps=20, step_size=0.03, random_start=False), (0.0, 1.0))
        with torch.no_grad():
            _, cam, logits = network.features_and_cam(attacked)
        target = logits.argmax(1)
        flips = target != y
        flipped += int(flips.sum())
        area = cam.shape[2] * cam.shape[3]
        margin = pick(clean_logits, y) - pick(clean_logits, target)
        two_class = measure(class_distances(clean_cam, cam, "l1"), y, target, "two-class")
        assert (two_class[flips] >= area * margin[flips] / 2 - 1e-4).all()
    assert flipped >= 20  # the attacks really flip labels, so the inequality is exercised


def test_soft_target_weights_mask_the_true_class_and_stay_finite():
    logits = torch.tensor([[200.0, 0.0, -3.0], [1.0, 2.0, 3.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    weights = soft_target_weights(logits, y)
    assert torch.isfinite(weights).all() and torch.allclose(weights.sum(1), torch.ones(2))
    assert weights[0, 0] == 0 and weights[1, 2] == 0
    assert torch.allclose(weights[1, :2], torch.softmax(torch.tensor([1.0, 2.0]), 0))
    (weights[:, 1]).sum().backward()  # not detached: the objective's gradient reaches the logits
    assert logits.grad.abs().sum() > 0


def test_isa_drives_the_one_class_discrepancy_below_the_two_class_floor():
    model = build("small-gap", SHAPE, 10, seed=0)
    network = from_sequential(model, SHAPE)
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    target = logits.masked_fill(torch.nn.functional.one_hot(y, 10).bool(), float("-inf")).argmax(1)
    floor = 4 * (pick(logits, y) - pick(logits, target)) / 2  # HW x the clean margin / 2
    eps = minimal_eps(network, x, y, target, SneakingOptions())
    one = sneaking_attack(network, x, y, target, SneakingOptions(measure="one-class", penalty=3, rounds=16), eps)
    two = sneaking_attack(network, x, y, target, SneakingOptions(measure="two-class", penalty=3, rounds=16), eps)
    assert one.success.all() and two.success.all()
    assert (two.discrepancy >= floor - 1e-4).all()  # the inequality: 2-class cannot go below the floor
    assert (one.discrepancy < 0.8 * floor).float().mean() >= 0.75
    assert one.discrepancy.median() < 0.6 * two.discrepancy.median()
