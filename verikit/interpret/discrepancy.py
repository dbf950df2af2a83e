"""Interpretation discrepancy between a clean input x and a perturbed x' (seed-papers.md 5.2).

Per class k, d_k = ||CAM_k(x') - CAM_k(x)|| summed over positions, l1 or squared l2. The measures:
1-class d_y; 2-class (d_y + d_t) / 2 for a target t; all-class sum_k d_k / K. With l1 and a GAP head,
d_y + d_t >= HW [(f_y - f_t)(x) + (f_t - f_y)(x')]: an x' that flips y to t moves the 2-class measure
by at least HW times half the clean margin, while a 1-class measure can stay small.

Training (Int): D = d_y + sum_{k != y} pbar_k d_k, with pbar the softmax of the perturbed logits over
the classes other than y (a soft stand-in for the unknown target; not detached), summed over positions
per input, then averaged over the batch by the caller.
"""
from __future__ import annotations

import torch

from verikit.errors import VerikitError

NORMS = ("l1", "l2")
MEASURES = ("one-class", "two-class", "all-class")


def class_distances(clean: torch.Tensor, perturbed: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """d_k for maps [B, K, H, W]: [B, K] (l1: sum of |difference|; l2: sum of squared differences)."""
    difference = (perturbed - clean).flatten(2)
    if norm == "l1":
        return difference.abs().sum(2)
    if norm == "l2":
        return (difference ** 2).sum(2)
    raise VerikitError(f"unknown discrepancy norm {norm!r}", place="norm", fix=f"use one of: {', '.join(NORMS)}")


def pick(values: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """values[b, classes[b]]: [B]."""
    return values.gather(1, classes.reshape(-1, 1)).squeeze(1)


def measure(distances: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, name: str) -> torch.Tensor:
    """The 1-class, 2-class or all-class discrepancy [B] from class distances [B, K]."""
    if name == "one-class":
        return pick(distances, y)
    if name == "two-class":
        if target is None:
            raise VerikitError("the two-class discrepancy needs a target class", place="measure",
                               fix="give the target classes")
        return (pick(distances, y) + pick(distances, target)) / 2
    if name == "all-class":
        return distances.mean(1)
    raise VerikitError(f"unknown discrepancy measure {name!r}", place="measure",
                       fix=f"use one of: {', '.join(MEASURES)}")


def soft_target_weights(perturbed_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """pbar [B, K]: softmax of the perturbed logits with the true class masked out and the rest
    renormalised (computed as a softmax over the other classes, which cannot divide 0 by 0)."""
    true = torch.nn.functional.one_hot(y, perturbed_logits.shape[1]).bool()
    return torch.softmax(perturbed_logits.masked_fill(true, float("-inf")), dim=1)


def training_discrepancy(distances: torch.Tensor, y: torch.Tensor, pbar: torch.Tensor | None) -> torch.Tensor:
    """Int's D [B]: d_y, plus sum_k pbar_k d_k unless pbar is None (Int-one)."""
    true_term = pick(distances, y)
    return true_term if pbar is None else true_term + (pbar * distances).sum(1)
