"""Plain bound records passed between engines, methods and layer rules (never stored on graph nodes)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

FLOAT32_SLACK = 1e-5  # relative rounding a float32 bound computation may be off by, on the values it bounds


@dataclass(frozen=True)
class Interval:
    """Elementwise lower and upper bounds of one value, shaped [batch, *value_shape]."""

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def center(self) -> torch.Tensor:
        return (self.upper + self.lower) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2

    @classmethod
    def point(cls, value: torch.Tensor) -> "Interval":
        return cls(value, value)

    def contains(self, value: torch.Tensor, tolerance: float = 1e-5) -> bool:
        """True when value (broadcastable to the bounds) lies inside, up to a relative tolerance."""
        slack = tolerance * (1 + value.abs())
        return bool(((value >= self.lower - slack) & (value <= self.upper + slack)).all())

    def intersect(self, other: "Interval") -> "Interval":
        """Both bounds hold, so the value lies in both. Where rounding makes the two disjoint (a
        near-constant neuron bounded two ways), the result is the sliver between them, never an
        empty interval whose relaxation would be garbage."""
        lower, upper = torch.maximum(self.lower, other.lower), torch.minimum(self.upper, other.upper)
        return Interval(torch.minimum(lower, upper), torch.maximum(lower, upper))

    def to(self, dtype: torch.dtype) -> "Interval":
        return Interval(self.lower.to(dtype), self.upper.to(dtype))

    def widened(self, relative: float = FLOAT32_SLACK) -> "Interval":
        """Each bound moved outward by relative * (1 + |bound|): where a float32 computation's bounds become
        hard constraints in float64 (an LP), a point-like interval must not exclude the value it rounds."""
        return Interval(self.lower - relative * (1 + self.lower.abs()), self.upper + relative * (1 + self.upper.abs()))


@dataclass(frozen=True)
class LinearBound:
    """A linear function `coefficients . x + bias` of some value x.

    coefficients: [batch, rows, *x_shape]; bias: [batch, rows].
    """

    coefficients: torch.Tensor
    bias: torch.Tensor


@dataclass(frozen=True)
class Relaxation:
    """Per-neuron lines that sandwich a nonlinearity on its input interval:

    lower_slope * z + lower_intercept <= f(z) <= upper_slope * z + upper_intercept.
    Tensors are shaped like the nonlinearity's input, [batch, *shape].
    """

    lower_slope: torch.Tensor
    lower_intercept: torch.Tensor
    upper_slope: torch.Tensor
    upper_intercept: torch.Tensor
