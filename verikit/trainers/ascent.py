"""Sign-gradient ascent in an L-inf box: the attack every adversarial trainer (pgd-at, trades, interpret)
and the interpretation attacks share."""
from __future__ import annotations

from typing import Callable

import torch


def _per_input(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar or a [B] tensor, shaped to broadcast over inputs [B, ...]."""
    value = torch.as_tensor(value, dtype=x.dtype)
    return value.reshape(-1, *([1] * (x.dim() - 1))) if value.dim() else value


def sign_ascent(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float | torch.Tensor,
                steps: int, step_size: float | torch.Tensor, domain: tuple[float, float] = (0.0, 1.0),
                random_start: bool = False, generator: torch.Generator | None = None,
                clip_scale: float | None = None) -> torch.Tensor:
    """The point after `steps` sign-gradient steps that increase objective(point) (a scalar; sum
    per-input terms), each projected onto the box of radius eps (per input where a [B] tensor) around x,
    clipped to `domain`. A random start is uniform in that box. With `clip_scale` the direction is
    clamp(clip_scale x gradient, -1, 1) instead of the sign: small gradients take small steps."""
    eps, step_size = _per_input(eps, x), _per_input(step_size, x)
    lower, upper = torch.maximum(x - eps, torch.full_like(x, domain[0])), torch.minimum(x + eps, torch.full_like(
        x, domain[1]))
    point = x.detach().clone()
    if random_start:
        point = lower + (upper - lower) * torch.rand(x.shape, generator=generator, dtype=x.dtype)
    for _ in range(steps):
        point.requires_grad_(True)
        with torch.enable_grad():
            gradient, = torch.autograd.grad(objective(point), point)
        direction = gradient.sign() if clip_scale is None else (clip_scale * gradient).clamp(-1, 1)
        point = torch.minimum(torch.maximum(point.detach() + step_size * direction, lower), upper)
    return point.detach()
