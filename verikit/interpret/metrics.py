"""How much an attack moves an interpretation map (seed-papers.md 5.4): Kendall's tau rank correlation
and the top-k intersection between the clean and the attacked true-class CAM, on the inputs whose
prediction the attack did not change."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import kendalltau

from verikit.interpret.attacks import topk_cam_attack
from verikit.interpret.maps import cam_of
from verikit.interpret.network import SplitNetwork


def kendall_tau(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Kendall's tau-b between the flattened maps of each input ([B, ...] each): [B] in [-1, 1]; a
    constant map has no ranking and gives nan."""
    values = [kendalltau(a, b).statistic for a, b in zip(first.flatten(1).double().numpy(),
                                                          second.flatten(1).double().numpy())]
    return torch.tensor(np.asarray(values, dtype=np.float64))


def topk_intersection(first: torch.Tensor, second: torch.Tensor, k: int) -> torch.Tensor:
    """The share of each input's k largest positions of `first` that are among the k largest of `second`: [B]."""
    top_first = first.flatten(1).topk(k, dim=1).indices
    top_second = second.flatten(1).topk(k, dim=1).indices
    shared = (top_first.unsqueeze(2) == top_second.unsqueeze(1)).any(2)
    return shared.double().sum(1) / k


@dataclass
class Stability:
    """The top-k CAM attack's effect at one eps, averaged over the inputs it did not flip."""

    eps: float
    kendall_tau: float
    intersection: float
    kept: int  # inputs whose prediction did not change
    total: int


@dataclass
class StabilityOptions:
    """The reference's top-k attack (eval.py): k 8, 200 sign steps of 0.01 from a random start."""

    k: int = 8
    steps: int = 200
    step_size: float = 0.01
    seed: int = 99
    domain: tuple[float, float] = (0.0, 1.0)


def cam_stability(network: SplitNetwork, x: torch.Tensor, y: torch.Tensor, eps: float,
                  options: StabilityOptions | None = None) -> Stability:
    """Attack the true-class CAM with the top-k attack at eps, then compare the clean and attacked CAM."""
    options = options or StabilityOptions()
    generator = torch.Generator().manual_seed(options.seed)
    attacked = topk_cam_attack(network, x, y, eps, options.k, options.steps, options.step_size, options.domain,
                               generator)
    with torch.no_grad():
        clean_cam, attacked_cam = cam_of(network, x, y), cam_of(network, attacked, y)
        kept = network.logits(x).argmax(1) == network.logits(attacked).argmax(1)
    tau = kendall_tau(clean_cam[kept], attacked_cam[kept])
    shared = topk_intersection(clean_cam[kept], attacked_cam[kept], options.k)
    return Stability(eps, float(np.nanmean(tau.numpy())) if len(tau) else float("nan"),
                     float(shared.mean()) if len(shared) else float("nan"), int(kept.sum()), len(x))
