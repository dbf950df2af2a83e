"""Input regions over the flattened input (VNN-LIB's X_i order): boxes and Lp balls.

Tensors are batched: a region holds B problems, each over n inputs ([B, n]). `concretize` turns linear
bounds A . x + b ([B, K, n], [B, K]) into intervals over the region by the dual norm (Holder).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from verikit.bounds import Interval, LinearBound

NORMS = {"inf": float("inf"), "2": 2.0, "1": 1.0}


def parse_norm(norm: str | float) -> float:
    """'inf' / 'linf' / 2 / '1' ... -> inf, 2.0 or 1.0."""
    key = str(norm).lower().removeprefix("l").removesuffix(".0")
    if key not in NORMS:
        raise ValueError(f"unsupported norm {norm!r}: use inf, 2 or 1")
    return NORMS[key]


def dual_norm(p: float) -> float:
    return {float("inf"): 1.0, 2.0: 2.0, 1.0: float("inf")}[p]


def rowwise_dot(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[B, K, n] . [B, n] -> [B, K]: a batched matrix product, except for one or two rows, where a
    batched dot product is up to 3x faster on the CPU (ReLU splitting folds to one row a problem)."""
    if a.shape[1] <= 2:
        return torch.linalg.vecdot(a, v.unsqueeze(1))
    return (a @ v.unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class Box:
    """Elementwise bounds lower <= x <= upper, shaped [B, n]."""

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def batch(self) -> int:
        return self.lower.shape[0]

    @property
    def center(self) -> torch.Tensor:
        return (self.lower + self.upper) / 2

    def bounding_box(self) -> Interval:
        return Interval(self.lower, self.upper)

    def concretize(self, linear: LinearBound) -> Interval:
        a = linear.coefficients.flatten(start_dim=2)
        mid = rowwise_dot(a, self.center) + linear.bias
        spread = rowwise_dot(a.abs(), (self.upper - self.lower) / 2)
        return Interval(mid - spread, mid + spread)

    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` uniform points per problem: [B, count, n]."""
        u = torch.rand(self.batch, count, self.lower.shape[1], generator=generator, dtype=self.lower.dtype)
        return self.lower.unsqueeze(1) + u * (self.upper - self.lower).unsqueeze(1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest point of the region for x shaped [B, m, n]."""
        return torch.maximum(torch.minimum(x, self.upper.unsqueeze(1)), self.lower.unsqueeze(1))

    def contains(self, x: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
        """[B, m] booleans for x shaped [B, m, n]."""
        return ((x >= self.lower.unsqueeze(1) - tolerance) & (x <= self.upper.unsqueeze(1) + tolerance)).all(-1)

    def select(self, index: torch.Tensor | slice) -> "Box":
        return Box(self.lower[index], self.upper[index])

    def to(self, dtype: torch.dtype, device: str | torch.device = "cpu") -> "Box":
        """The box in `dtype` on `device`, rounded outward: a lower precision never loses a point of it."""
        return Box(round_outward(self.lower, dtype, -1).to(device), round_outward(self.upper, dtype, +1).to(device))


@dataclass(frozen=True)
class LpBall:
    """{x : ||x - center||_p <= radius} intersected with an optional domain box, shaped [B, n]."""

    center: torch.Tensor
    radius: torch.Tensor  # [B]
    norm: float = float("inf")
    domain: Box | None = None

    @property
    def batch(self) -> int:
        return self.center.shape[0]

    def bounding_box(self) -> Interval:
        r = self.radius.reshape(-1, 1)
        box = Interval(self.center - r, self.center + r)
        return box.intersect(self.domain.bounding_box()) if self.domain is not None else box

    def concretize(self, linear: LinearBound) -> Interval:
        """A x0 + b -/+ radius ||A||_q, tightened by the domain box's own bound where that is smaller."""
        a = linear.coefficients.flatten(start_dim=2)
        mid = rowwise_dot(a, self.center) + linear.bias
        spread = self.radius.reshape(-1, 1) * torch.linalg.vector_norm(a, ord=dual_norm(self.norm), dim=-1)
        result = Interval(mid - spread, mid + spread)
        if self.domain is not None:
            result = result.intersect(self.domain.concretize(linear))
        return result

    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` points per problem, uniform in the ball, clipped into the domain: [B, count, n]."""
        b, n = self.center.shape
        dtype = self.center.dtype
        if self.norm == float("inf"):
            direction = 2 * torch.rand(b, count, n, generator=generator, dtype=dtype) - 1
        elif self.norm == 2.0:
            g = torch.randn(b, count, n, generator=generator, dtype=dtype)
            scale = torch.rand(b, count, 1, generator=generator, dtype=dtype) ** (1.0 / n)
            direction = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12) * scale
        else:
            e = -torch.log(torch.rand(b, count, n + 1, generator=generator, dtype=dtype).clamp_min(1e-12))
            signs = torch.randint(0, 2, (b, count, n), generator=generator).to(dtype) * 2 - 1
            direction = signs * e[..., :n] / e.sum(-1, keepdim=True)
        points = self.center.unsqueeze(1) + self.radius.reshape(-1, 1, 1) * direction
        return self.domain.project(points) if self.domain is not None else points

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Project onto the ball, then clip into the domain (clipping towards a centre inside the domain
        never leaves the ball)."""
        delta = x - self.center.unsqueeze(1)
        r = self.radius.reshape(-1, 1, 1)
        if self.norm == float("inf"):
            delta = torch.maximum(torch.minimum(delta, r), -r)
        elif self.norm == 2.0:
            norm = delta.norm(dim=-1, keepdim=True)
            delta = delta * torch.clamp(r / norm.clamp_min(1e-12), max=1.0)
        else:
            delta = _project_l1(delta, r)
        points = self.center.unsqueeze(1) + delta
        return self.domain.project(points) if self.domain is not None else points

    def contains(self, x: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
        distance = torch.linalg.vector_norm(x - self.center.unsqueeze(1), ord=self.norm, dim=-1)
        inside = distance <= self.radius.reshape(-1, 1) * (1 + 1e-6) + tolerance
        return inside & self.domain.contains(x, tolerance) if self.domain is not None else inside

    def select(self, index: torch.Tensor | slice) -> "LpBall":
        domain = self.domain.select(index) if self.domain is not None else None
        return LpBall(self.center[index], self.radius[index], self.norm, domain)

    def to(self, dtype: torch.dtype, device: str | torch.device = "cpu") -> "LpBall":
        """The ball in `dtype` on `device`; where the centre rounds, the radius grows by the distance it
        moved (and rounds up), so the ball still holds every point of the original."""
        domain = self.domain.to(dtype, device) if self.domain is not None else None
        center = self.center.to(dtype)
        radius = self.radius
        if center.dtype != self.center.dtype:
            moved = torch.linalg.vector_norm(center.to(self.center.dtype) - self.center, ord=self.norm, dim=-1)
            radius = round_outward(radius + moved.reshape(radius.shape), dtype, +1)
        return LpBall(center.to(device), radius.to(dtype=dtype, device=device), self.norm, domain)


Region = Union[Box, LpBall]


def round_outward(value: torch.Tensor, dtype: torch.dtype, direction: int) -> torch.Tensor:
    """`value` in `dtype`, rounded down (direction -1) or up (+1) where the conversion loses precision:
    a box or radius converted to float32 then still holds its float64 points (pinned inputs included)."""
    converted = value.to(dtype)
    if not converted.is_floating_point() or torch.finfo(dtype).bits >= torch.finfo(value.dtype).bits:
        return converted
    back = converted.to(value.dtype)
    target = torch.full_like(converted, direction * float("inf"))
    moved = torch.nextafter(converted, target)
    wrong_side = back < value if direction > 0 else back > value
    return torch.where(wrong_side, moved, converted)


def _project_l1(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the L1 ball (sort-based, Duchi et al. 2008)."""
    magnitude = delta.abs()
    inside = magnitude.sum(-1, keepdim=True) <= radius
    sorted_mag, _ = torch.sort(magnitude, dim=-1, descending=True)
    cumulative = sorted_mag.cumsum(-1) - radius
    ranks = torch.arange(1, delta.shape[-1] + 1, dtype=delta.dtype, device=delta.device)
    condition = sorted_mag - cumulative / ranks > 0
    count = condition.to(delta.dtype).sum(-1, keepdim=True).clamp_min(1)
    threshold = cumulative.gather(-1, count.long() - 1) / count
    projected = torch.sign(delta) * (magnitude - threshold).clamp_min(0)
    return torch.where(inside, delta, projected)
