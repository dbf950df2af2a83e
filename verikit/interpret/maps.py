"""Interpretation maps of a SplitNetwork (seed-papers.md 5.1): CAM, GradCAM++ and Integrated Gradients.

- CAM_k = the bias-free linear head applied at every position of the last feature map; the spatial
  mean of CAM_k is logit k exactly.
- GradCAM++ (Chattopadhay et al. 2018) with the exponential-score closed form: for g = dS_k/dA,
  alpha = g^2 / (2 g^2 + sum_ij A g^3), weights w_c = sum_ij alpha relu(g), map = relu(sum_c w_c A_c).
  (The Int reference uses, for GAP nets only, the head's weights clipped at 0 instead.)
- IG: (end - start) times the mean gradient along the straight path (right Riemann sum), of the logit
  from a zero baseline for pictures, of the cross-entropy from x to x' in IG-Norm training.
"""
from __future__ import annotations

from typing import Callable

import torch

from verikit.errors import VerikitError
from verikit.interpret.network import SplitNetwork

METHODS = ("cam", "gradcam++", "ig")


def class_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """logits[b, classes[b]] for each b: [B]."""
    return logits.gather(1, classes.reshape(-1, 1)).squeeze(1)


def cam_of(network: SplitNetwork, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """CAM of class classes[b] for each input: [B, H, W] at the feature map's resolution."""
    features, _ = network.forward(x)
    cams = network.cam(features)
    return cams[torch.arange(len(x)), classes]


def gradcam_plus_plus(network: SplitNetwork, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """GradCAM++ of class classes[b] at the cut's feature map: [B, H, W], at least 0."""
    if network.why_no_features:
        raise VerikitError(f"the model {network.why_no_features}", path=network.source, fix="use --method ig")
    with torch.enable_grad():
        features, logits = network.forward(x.detach().requires_grad_(True))  # a path from x to the features
        gradient, = torch.autograd.grad(class_scores(logits, classes).sum(), features)
    features, gradient = features.detach(), gradient.detach()
    squared, cubed = gradient ** 2, gradient ** 3
    denominator = 2 * squared + features.sum(dim=(2, 3), keepdim=True) * cubed
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where(denominator != 0, squared / safe, torch.zeros_like(denominator))
    weights = (alpha * gradient.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    return (weights * features).sum(dim=1).clamp(min=0)


def path_gradients(function: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, end: torch.Tensor,
                   steps: int, create_graph: bool = False) -> torch.Tensor:
    """(end - start) * mean of d function / d z at z = start + (end - start) s / steps, s = 1..steps.
    `function` maps inputs [B, ...] to one value an input [B]; create_graph keeps it differentiable."""
    total = torch.zeros_like(end)
    with torch.enable_grad():
        for step in range(1, steps + 1):
            point = start + (end - start) * (step / steps)
            if not point.requires_grad:
                point.requires_grad_(True)
            gradient, = torch.autograd.grad(function(point).sum(), point, create_graph=create_graph)
            total = total + gradient
    return (end - start) * total / steps


def integrated_gradients(network: SplitNetwork, x: torch.Tensor, classes: torch.Tensor, steps: int = 64,
                         baseline: torch.Tensor | None = None) -> torch.Tensor:
    """IG of the class score from `baseline` (zeros) to x: [B, C, H, W]; its sum over pixels approaches
    score(x) - score(baseline) as steps grow (completeness)."""
    start = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    return path_gradients(lambda z: class_scores(network.logits(z), classes), start, x, steps).detach()


def explain(network: SplitNetwork, x: torch.Tensor, classes: torch.Tensor, method: str,
            steps: int = 64) -> torch.Tensor:
    """The `method` map of class classes[b] for each input: CAM and GradCAM++ [B, h, w] at the feature
    map's resolution, IG [B, H, W] summed over the input's channels."""
    if method == "cam":
        with torch.no_grad():
            return cam_of(network, x, classes)
    if method == "gradcam++":
        return gradcam_plus_plus(network, x, classes)
    if method == "ig":
        return integrated_gradients(network, x, classes, steps).sum(dim=1)
    raise VerikitError(f"no interpretation method named {method!r}", place="--method",
                       fix=f"choose one of: {', '.join(METHODS)}")
