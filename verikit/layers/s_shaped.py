"""Sigmoid, Tanh, Atan: S-shaped activations and CNN-Cert's tangent/chord relaxation (seed-papers 1.3).

An S-shaped function f is increasing, convex for z <= 0 and concave for z >= 0. On [l, u]:
  l >= 0  (concave): upper = tangent at the midpoint, lower = chord l -> u;
  u <= 0  (convex):  upper = chord l -> u,            lower = tangent at the midpoint;
  l < 0 < u:         upper = the line through (l, f(l)) tangent to f at some d in [0, u], found by
                     bisection (the chord l -> u when the tangency point would lie beyond u);
                     lower = the mirror image (through (u, f(u)), tangent at some d in [l, 0]);
  u - l tiny:        both lines have the midpoint's tangent slope, shifted to touch f's extremes.
Modes "adaptive" and "optimizable" (CROWN, alpha-CROWN) then take, per neuron and side, the tighter
at the midpoint of that line and DeepPoly's (Singh et al. 2019): slope min(f'(l), f'(u)) through
(u, f(u)) above and (l, f(l)) below. On wide intervals the tangents overshoot f's range far from their
point of contact, and a deep sigmoid net's CROWN bound came out looser than interval propagation's;
"same-slope" and "zero" keep CNN-Cert's lines alone.
Subclass `SShapedRule` with `function` and `derivative` to get all of this for another S-shaped op (the
example plugin's Softsign does). Lines are computed in float64 and returned in the bound's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from verikit.bounds import Interval, Relaxation
from verikit.errors import ModelError
from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import RELAXATION_MODES, ElementwiseRule
from verikit.lp.encode import LPModel, encode_lines, sample

Function = Callable[[torch.Tensor], torch.Tensor]

ADAPTIVE_MODES = ("adaptive", "optimizable")
BISECTION_STEPS = 30
TINY_WIDTH = 1e-8  # relative width below which the two-tangent rule replaces chords


@dataclass(frozen=True)
class Line:
    """Per-neuron lines slope * z + intercept."""

    slope: torch.Tensor
    intercept: torch.Tensor


def tangent(f: Function, df: Function, at: torch.Tensor) -> Line:
    """The tangent of f at `at`."""
    slope = df(at)
    return Line(slope, f(at) - slope * at)


def chord(f: Function, start: torch.Tensor, end: torch.Tensor) -> Line:
    """The line through (start, f(start)) and (end, f(end)); needs end > start."""
    slope = (f(end) - f(start)) / (end - start)
    return Line(slope, f(start) - slope * start)


def select(condition: torch.Tensor, first: Line, second: Line) -> Line:
    """`first` where condition holds, `second` elsewhere."""
    return Line(torch.where(condition, first.slope, second.slope),
                torch.where(condition, first.intercept, second.intercept))


def crossing_upper_line(f: Function, df: Function, lower: torch.Tensor, upper: torch.Tensor) -> Line:
    """For l < 0 < u: the tangent at d in [0, u] whose line passes (just) above (l, f(l)).

    Bisection keeps `high` where the tangent lies on or above f at l; any such tangent at d >= 0 bounds
    f from above on [l, u] (concave part: tangent; convex part: checked at its two ends). When even the
    tangent at u lies below f(l), the chord l -> u is an upper line instead."""
    f_lower = f(lower)

    def above_at_lower(d: torch.Tensor) -> torch.Tensor:
        return df(d) * (d - lower) <= f(d) - f_lower

    low, high = torch.zeros_like(upper), upper.clamp(min=0)
    use_chord = ~above_at_lower(high)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        above = above_at_lower(middle)
        high = torch.where(above, middle, high)
        low = torch.where(above, low, middle)
    return select(use_chord, chord(f, lower, upper), tangent(f, df, high))


def upper_line(f: Function, df: Function, lower: torch.Tensor, upper: torch.Tensor) -> Line:
    """An upper line of f on [lower, upper], for lower < upper by a non-tiny margin."""
    midpoint_tangent = tangent(f, df, (lower + upper) / 2)
    line = select(upper <= 0, chord(f, lower, upper), crossing_upper_line(f, df, lower, upper))
    return select(lower >= 0, midpoint_tangent, line)


def lower_line(f: Function, df: Function, lower: torch.Tensor, upper: torch.Tensor) -> Line:
    """A lower line of f on [lower, upper]: the upper line of g(y) = -f(-y) on [-upper, -lower], mirrored."""
    mirrored = upper_line(lambda y: -f(-y), lambda y: df(-y), -upper, -lower)
    return Line(mirrored.slope, -mirrored.intercept)


def endpoint_slope_lines(f: Function, df: Function, lower: torch.Tensor, upper: torch.Tensor,
                         ) -> tuple[Line, Line]:
    """DeepPoly's lines: slope min(f'(l), f'(u)) through (l, f(l)) below and (u, f(u)) above. Sound on
    any interval: f' rises up to 0 and falls after it, so its minimum over [l, u] is at an end, and
    every chord of f inside [l, u] is at least that steep."""
    slope = torch.minimum(df(lower), df(upper))
    return Line(slope, f(lower) - slope * lower), Line(slope, f(upper) - slope * upper)


def tighter(first: Line, second: Line, at: torch.Tensor, above: bool) -> Line:
    """Per neuron, of two upper (`above`) or lower lines, the one closer to f at `at`."""
    first_value, second_value = first.slope * at + first.intercept, second.slope * at + second.intercept
    return select(second_value < first_value if above else second_value > first_value, second, first)


def tiny_interval_lines(f: Function, df: Function, lower: torch.Tensor, upper: torch.Tensor,
                        ) -> tuple[Line, Line]:
    """Lower and upper lines with the midpoint's tangent slope k, through the extremes of f(z) - k z.

    Those extremes lie at l, u, the midpoint m or -m (where f' = f'(m) again when f' is even, as for
    every built-in), so the lines are exact for l == u and sound on any short interval."""
    midpoint = (lower + upper) / 2
    slope = df(midpoint)
    points = torch.stack([lower, upper, midpoint, torch.minimum(torch.maximum(-midpoint, lower), upper)])
    gaps = f(points) - slope * points
    return Line(slope, gaps.amin(dim=0)), Line(slope, gaps.amax(dim=0))


def s_shaped_relaxation(f: Function, df: Function, bound: Interval, adaptive: bool = False) -> Relaxation:
    """CNN-Cert's tangent/chord lines for an S-shaped f on `bound` (module doc), with `adaptive` the
    tighter of those and DeepPoly's per neuron and side; in bound's dtype."""
    lower, upper = bound.lower.double(), bound.upper.double()
    tiny = upper - lower <= TINY_WIDTH * (1 + lower.abs() + upper.abs())
    safe_upper = torch.where(tiny, lower + 1, upper)  # keeps chord divisions finite; tiny rule used there
    below, above = lower_line(f, df, lower, safe_upper), upper_line(f, df, lower, safe_upper)
    if adaptive:
        flat_below, flat_above = endpoint_slope_lines(f, df, lower, safe_upper)
        middle = (lower + safe_upper) / 2
        below, above = tighter(below, flat_below, middle, False), tighter(above, flat_above, middle, True)
    tiny_below, tiny_above = tiny_interval_lines(f, df, lower, upper)
    below, above = select(tiny, tiny_below, below), select(tiny, tiny_above, above)
    dtype = bound.lower.dtype
    return Relaxation(below.slope.to(dtype), below.intercept.to(dtype),
                      above.slope.to(dtype), above.intercept.to(dtype))


class SShapedRule(ElementwiseRule):
    """An attribute-free, increasing, S-shaped activation; subclasses give `function` and `derivative`.

    "same-slope" and "zero" get the tangent/chord lines, "adaptive" and "optimizable" the tighter of
    those and DeepPoly's per neuron (module doc)."""

    @staticmethod
    def function(z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def derivative(z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def build(cls, node: NodeInfo) -> "SShapedRule":
        return cls(node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

    def relax(self, bound: Interval, mode: str = "adaptive",
              lower_slope: torch.Tensor | None = None) -> Relaxation:
        if mode not in RELAXATION_MODES:
            raise ValueError(f"unknown relaxation mode '{mode}'; choose one of {', '.join(RELAXATION_MODES)}")
        return s_shaped_relaxation(self.function, self.derivative, bound, adaptive=mode in ADAPTIVE_MODES)

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list[Interval]) -> np.ndarray:
        """The tangent/chord lines as two rows per neuron; a MILP cannot encode f exactly and is refused."""
        if model.exact:
            raise ModelError(f"{type(self).__name__} node '{self.name}': an S-shaped activation has no exact "
                             "MILP encoding", fix="use a bound method (crown, dual-lp) or bab for this network")
        lines = self.relax(bounds[0])
        return encode_lines(model, inputs[0], sample(lines.lower_slope), sample(lines.lower_intercept),
                            sample(lines.upper_slope), sample(lines.upper_intercept))


class Sigmoid(SShapedRule):
    """ONNX Sigmoid: 1 / (1 + exp(-z))."""

    op_types = ("Sigmoid",)

    @staticmethod
    def function(z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z)

    @staticmethod
    def derivative(z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z) * torch.sigmoid(-z)


class Tanh(SShapedRule):
    """ONNX Tanh."""

    op_types = ("Tanh",)

    @staticmethod
    def function(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z)

    @staticmethod
    def derivative(z: torch.Tensor) -> torch.Tensor:
        return torch.cosh(z).pow(-2)


class Atan(SShapedRule):
    """ONNX Atan."""

    op_types = ("Atan",)

    @staticmethod
    def function(z: torch.Tensor) -> torch.Tensor:
        return torch.atan(z)

    @staticmethod
    def derivative(z: torch.Tensor) -> torch.Tensor:
        return 1 / (1 + z * z)


@hookimpl
def verikit_layers(register) -> None:
    register(Sigmoid)
    register(Tanh)
    register(Atan)
