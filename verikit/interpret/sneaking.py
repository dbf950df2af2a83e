"""The interpretability sneaking attack (ISA, seed-papers.md 5.2): flip the prediction to a target class
while keeping the interpretation discrepancy small.

Loss of x' (descended from x, 10 steps a try of 0.2 eps x clamp(200 x gradient, -1, 1): the reference's
1000 on the mean over its 5-image batches, so small gradients take small steps): max(max_{j != t} f_j -
f_t, -kappa) + gamma D(x, x'). First each image's minimal eps for the targeted attack alone (gamma = 0) by bisection;
then, at eps = penalty x that minimum, the largest gamma that still flips the label, also by bisection;
the discrepancy at the final point is what the attack achieves. A 1-class measure can be driven far
lower this way than a 2-class one, which is bounded below by HW x the clean margin / 2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verikit.trainers.ascent import sign_ascent
from verikit.interpret.discrepancy import class_distances, measure, pick
from verikit.interpret.network import SplitNetwork


@dataclass
class SneakingOptions:
    """The reference's settings (funcs.py): kappa 0.1, 10 rounds of 10 steps, eps from 0.05, gamma from 5e-5."""

    measure: str = "two-class"  # one-class | two-class | all-class
    norm: str = "l1"  # l1 | l2 (squared)
    kappa: float = 0.1
    steps: int = 10
    rounds: int = 10
    clip_scale: float = 200.0  # a step is 0.2 eps x clamp(clip_scale x gradient, -1, 1)
    penalty: float = 1.0  # the attack's eps as a multiple of the image's minimal eps
    start_eps: float = 0.05
    start_gamma: float = 5e-5
    domain: tuple[float, float] = (0.0, 1.0)


@dataclass
class SneakingResult:
    """Per input: the point, its eps and gamma, whether it flips the label to the target, and D(x, x')."""

    adversarial: torch.Tensor
    eps: torch.Tensor
    gamma: torch.Tensor
    success: torch.Tensor
    discrepancy: torch.Tensor


def targeted_margin(logits: torch.Tensor, target: torch.Tensor, kappa: float) -> torch.Tensor:
    """max_{j != t} f_j - f_t, floored at -kappa: negative exactly when t is the top class. [B]"""
    others = logits.scatter(1, target.reshape(-1, 1), float("-inf")).max(1).values
    return torch.clamp(others - pick(logits, target), min=-kappa)


def _discrepancy(network: SplitNetwork, clean_cam: torch.Tensor, point: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor, options: SneakingOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(x, point) [B], logits at point)."""
    _, cam, logits = network.features_and_cam(point)
    distances = class_distances(clean_cam, cam, options.norm)
    return measure(distances, y, target, options.measure), logits


def _descend(network: SplitNetwork, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, eps: torch.Tensor,
             gamma: torch.Tensor, options: SneakingOptions, clean_cam: torch.Tensor) -> torch.Tensor:
    """One try: steps of at most 0.2 eps lowering margin + gamma D, from x."""

    def objective(point: torch.Tensor) -> torch.Tensor:
        discrepancy, logits = _discrepancy(network, clean_cam, point, y, target, options)
        return -(targeted_margin(logits, target, options.kappa) + gamma * discrepancy).sum()

    return sign_ascent(objective, x, eps, options.steps, 0.2 * eps, options.domain, clip_scale=options.clip_scale)


def _flips(network: SplitNetwork, point: torch.Tensor, target: torch.Tensor, kappa: float) -> torch.Tensor:
    with torch.no_grad():
        return targeted_margin(network.logits(point), target, kappa) < 0


def minimal_eps(network: SplitNetwork, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor,
                options: SneakingOptions) -> torch.Tensor:
    """Per input, the smallest eps found (bisection, `rounds` tries) at which the targeted attack flips
    the label to the target; 1 where none did."""
    clean_cam = _clean_cam(network, x)
    eps, low, high = torch.full((len(x),), options.start_eps), torch.zeros(len(x)), torch.ones(len(x))
    zero = torch.zeros(len(x))
    for _ in range(options.rounds):
        success = _flips(network, _descend(network, x, y, target, eps, zero, options, clean_cam), target,
                         options.kappa)
        high = torch.where(success, eps, high)
        low = torch.where(success, low, eps)
        eps = torch.where(success, (low + high) / 2, torch.minimum(2 * eps, (low + high) / 2))
    return high


def _clean_cam(network: SplitNetwork, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network.features_and_cam(x)[1]


def sneaking_attack(network: SplitNetwork, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor,
                    options: SneakingOptions, eps_min: torch.Tensor | None = None) -> SneakingResult:
    """ISA at eps = penalty x eps_min (found by `minimal_eps` when not given): the largest gamma that
    still flips the label (bisection), and the discrepancy it leaves."""
    if eps_min is None:
        eps_min = minimal_eps(network, x, y, target, options)
    eps, clean_cam = options.penalty * eps_min, _clean_cam(network, x)
    gamma, low, high = torch.full((len(x),), options.start_gamma), torch.zeros(len(x)), torch.ones(len(x))
    for _ in range(options.rounds):
        success = _flips(network, _descend(network, x, y, target, eps, gamma, options, clean_cam), target,
                         options.kappa)
        low = torch.where(success, gamma, low)
        high = torch.where(success, high, gamma)
        gamma = torch.where(success, torch.minimum(2 * gamma, (low + high) / 2), (low + high) / 2)
    point = _descend(network, x, y, target, eps, low, options, clean_cam)
    with torch.no_grad():
        discrepancy, logits = _discrepancy(network, clean_cam, point, y, target, options)
    success = targeted_margin(logits, target, options.kappa) < 0
    return SneakingResult(point, eps, low, success, discrepancy)
