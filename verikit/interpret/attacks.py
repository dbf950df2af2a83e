"""Attacks for evaluating interpretation-aware defences (seed-papers.md 5.3-5.4): PGD on the label (the
paper's evaluation: no random start) and the top-k CAM attack that pushes down the true-class CAM at its
clean top-k positions, both by verikit.trainers.ascent's sign-gradient ascent.
"""
from __future__ import annotations

import torch
from torch import nn

from verikit.interpret.maps import cam_of
from verikit.interpret.network import SplitNetwork
from verikit.trainers.ascent import sign_ascent
from verikit.trainers.baselines import PGDOptions, pgd


def pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 200,
                 step_size: float = 0.01, domain: tuple[float, float] = (0.0, 1.0)) -> float:
    """Accuracy under PGD on the cross-entropy of the label, no random start (the Int evaluation)."""
    if eps > 0:
        x = pgd(model, x, y, eps, PGDOptions(steps=steps, step_size=step_size, random_start=False), domain)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def topk_cam_attack(network: SplitNetwork, x: torch.Tensor, y: torch.Tensor, eps: float, k: int = 8,
                    steps: int = 200, step_size: float = 0.01, domain: tuple[float, float] = (0.0, 1.0),
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The top-k attack on CAM: from a random start, sign steps that lower the sum of CAM_y(x') over the
    k positions where CAM_y(x) is largest."""
    with torch.no_grad():
        top = cam_of(network, x, y).flatten(1).topk(k, dim=1).indices

    def objective(point: torch.Tensor) -> torch.Tensor:
        return -cam_of(network, point, y).flatten(1).gather(1, top).sum()

    return sign_ascent(objective, x, eps, steps, step_size, domain, random_start=True, generator=generator)

