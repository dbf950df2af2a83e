"""Sigmoid, Tanh, Atan: S-shaped activations and CNN-Cert's tangent/chord relaxation (seed-papers 1.3).

An S-shaped function f is increasing, convex for z <= 0 and concave for z >= 0. On [l, u]:
  l >= 0  (concave): upper = tangent at the midpoint, lower = chord l -> u;
  u <= 0  (convex):  upper = chord l -> u,            lower = tangent at the midpoint;
  l < 0 < u:         upper = the line through (l, f(l)) tangent to f at some d in [0, u], found by
                     bisection (the chord l -> u when the tangency point would lie beyond u);
                     lower = the mirror image (through (u, f(u)), tangent at some d in [l, 0]);
  u - l tiny:        both lines have the midpoint's tangent slope, shifted to touch f's extremes.
Those are the lines of CROWN's and CNN-Cert's papers, given in modes "same-slope", "adaptive" and
"zero". Every tangent at a point of [d0, u] is an upper line too, d0 being the crossing case's tangency
point above or l in the concave case, and they are the undominated ones; "optimizable" (alpha-CROWN)
takes the tangent at d0 + t (u - d0) for a given t in [0, 1], and without t the one at the midpoint
clamped into [d0, u], the upper line of least area, where alpha-CROWN starts. Lower lines mirror all of
this. On a wide interval the papers' tangent at d0 overshoots f's range far from it: on a deep sigmoid
net CROWN's bound came out looser than interval propagation's, and alpha-crown's far tighter.
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


def tangency_floor(f: Function, df: Function, lower: torch.Tensor, upper: torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For l < 0 < u: the least d in [0, u] whose tangent passes (just) above (l, f(l)), and where no
    such d exists (then the chord l -> u is the upper line).

    Bisection keeps `high` where the tangent lies on or above f at l; any tangent at a d >= 0 with that
    property bounds f from above on [l, u] (concave part: tangent; convex part: checked at its two ends),
    and so does every tangent at a point between that d and u."""
    f_lower = f(lower)

    def above_at_lower(d: torch.Tensor) -> torch.Tensor:
        return df(d) * (d - lower) <= f(d) - f_lower

    low, high = torch.zeros_like(upper), upper.clamp(min=0)
    no_tangent = ~above_at_lower(high)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        above = above_at_lower(middle)
        high = torch.where(above, middle, high)
        low = torch.where(above, low, middle)
    return high, no_tangent


def upper_line(f: Function, df: Function, lower: torch.Tensor, upper: torch.Tensor,
               position: torch.Tensor | None = None) -> Line:
    """An upper line of f on [lower, upper] (lower < upper by a non-tiny margin): the chord where f is
    convex or no tangent fits, else the tangent at d0 + position (u - d0) (module doc); position None
    takes the midpoint clamped into [d0, u]."""
    floor, no_tangent = tangency_floor(f, df, lower, upper)
    start = torch.where(lower >= 0, lower, floor)
    if position is None:
        point = torch.minimum(torch.maximum((lower + upper) / 2, start), upper)
    else:
        point = start + position * (upper - start)
    use_chord = (upper <= 0) | ((lower < 0) & no_tangent)
    return select(use_chord, chord(f, lower, upper), tangent(f, df, point))


def lower_line(f: Function, df: Function, lower: torch.Tensor, upper: torch.Tensor,
               position: torch.Tensor | None = None) -> Line:
    """A lower line of f on [lower, upper]: the upper line of g(y) = -f(-y) on [-upper, -lower], mirrored."""
    mirrored = upper_line(lambda y: -f(-y), lambda y: df(-y), -upper, -lower, position)
    return Line(mirrored.slope, -mirrored.intercept)


def paper_positions(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions that give CROWN's and CNN-Cert's lines: the tangency floor where f crosses 0, the
    midpoint of a one-sided interval (upper line where f is concave, lower line where it is convex)."""
    zero, half = lower.new_tensor(0.0), lower.new_tensor(0.5)
    return torch.where(lower >= 0, half, zero), torch.where(upper <= 0, half, zero)


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


def s_shaped_relaxation(f: Function, df: Function, bound: Interval, mode: str = "adaptive",
                        positions: torch.Tensor | None = None) -> Relaxation:
    """Lower and upper lines of an S-shaped f on `bound` by mode (module doc), in bound's dtype;
    `positions` ([B, 2, *shape]: upper, lower, in [0, 1]) feeds mode "optimizable"."""
    lower, upper = bound.lower.double(), bound.upper.double()
    tiny = upper - lower <= TINY_WIDTH * (1 + lower.abs() + upper.abs())
    safe_upper = torch.where(tiny, lower + 1, upper)  # keeps chord divisions finite; tiny rule used there
    if mode == "optimizable" and positions is not None:
        if positions.shape[1:] != (2, *lower.shape[1:]):
            raise ValueError(f"S-shaped positions must be shaped [B, 2, *shape], got {tuple(positions.shape)}")
        above_at, below_at = (positions[:, side].double().clamp(0, 1) for side in (0, 1))  # sound only there
    elif mode == "optimizable":
        above_at = below_at = None  # least area
    else:
        above_at, below_at = paper_positions(lower, safe_upper)
    below = lower_line(f, df, lower, safe_upper, below_at)
    above = upper_line(f, df, lower, safe_upper, above_at)
    tiny_below, tiny_above = tiny_interval_lines(f, df, lower, upper)
    below, above = select(tiny, tiny_below, below), select(tiny, tiny_above, above)
    dtype = bound.lower.dtype
    return Relaxation(below.slope.to(dtype), below.intercept.to(dtype),
                      above.slope.to(dtype), above.intercept.to(dtype))


def least_area_positions(f: Function, df: Function, bound: Interval) -> torch.Tensor:
    """[B, 2, *shape]: the positions (upper, lower) of the least-area lines, where alpha-CROWN starts."""
    lower, upper = bound.lower.double(), bound.upper.double()
    upper = torch.where(upper - lower <= TINY_WIDTH * (1 + lower.abs() + upper.abs()), lower + 1, upper)
    middle = (lower + upper) / 2
    floor, _ = tangency_floor(f, df, lower, upper)
    mirrored_floor, _ = tangency_floor(lambda y: -f(-y), lambda y: df(-y), -upper, -lower)
    above_start = torch.where(lower >= 0, lower, floor)
    below_start = torch.where(upper <= 0, -upper, mirrored_floor)  # in the mirrored coordinate -z
    above = ((middle - above_start) / (upper - above_start).clamp_min(1e-12)).clamp(0, 1)
    below = ((-middle - below_start) / (-lower - below_start).clamp_min(1e-12)).clamp(0, 1)
    return torch.stack([above, below], dim=1).to(bound.lower.dtype)


class SShapedRule(ElementwiseRule):
    """An attribute-free, increasing, S-shaped activation; subclasses give `function` and `derivative`.

    "same-slope", "adaptive" and "zero" get the papers' lines, "optimizable" the tangents at given
    positions or, without them, the least-area tangents (module doc)."""

    exact_encoding = False  # its LP rows are tangent and chord lines: `milp` cannot decide it exactly

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
        return s_shaped_relaxation(self.function, self.derivative, bound, mode, lower_slope)

    def initial_parameters(self, bound: Interval) -> torch.Tensor:
        """alpha-CROWN's parameters for this op, the tangent positions ([B, 2, *shape] in [0, 1], passed
        to `relax` as `lower_slope` in mode "optimizable"), at the least-area lines."""
        return least_area_positions(self.function, self.derivative, bound)

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
