"""Clip y = min(max(z, a), b) (ReLU6, HardTanh) as a verikit layer rule with two kinks.

The rule states its pieces once (`kinks = (a, b)`), its lines, and its LP / MILP rows; verikit's methods
ask for those and never for the op's name: `bab` splits a neuron at a kink inside its interval, `milp`
encodes the pieces exactly, `alpha-crown` optimises the free line through a kink (`reslope`), and
`group-dual` cuts its groups' boxes along the kinks.

Lines on a neuron's interval [l, u], by where the kinks lie (p in [0, 1] is the optimisable parameter):
  no kink inside      exact: y = a, y = z or y = b
  only a inside       f = max(z, a), convex: upper line the chord (l, a)-(u, u); lower line through
                      (a, a) with slope p (adaptive: 1 if u - a >= a - l else 0, as CROWN's ReLU)
  only b inside       f = min(z, b), concave: lower line the chord (l, l)-(u, b); upper line through
                      (b, b) with slope p (adaptive: 1 if b - l >= u - b else 0)
  both inside         lower line through (a, a) with slope p (b - a) / (u - a), upper line through
                      (b, b) with slope p (b - a) / (b - l): both below and above f for p in [0, 1]
                      (adaptive: p = 1, the lines to (u, b) and from (l, a))
"""
from __future__ import annotations

import math

import numpy as np
import torch

from verikit.bounds import Interval, Relaxation
from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import RELAXATION_MODES, ElementwiseRule
from verikit.lp.encode import LPModel, encode_lines, sample


class Clip(ElementwiseRule):
    """ONNX Clip with constant min / max (inputs from opset 11, attributes before); either may be absent."""

    op_types = ("Clip",)

    def __init__(self, node: NodeInfo, low: float, high: float):
        super().__init__(node)
        self.low, self.high = low, high
        self.kinks = tuple(k for k in (low, high) if math.isfinite(k))

    @classmethod
    def build(cls, node: NodeInfo) -> "Clip":
        low = _limit(node, 1, "min", -math.inf)
        high = _limit(node, 2, "max", math.inf)
        if not low < high:
            raise cls.reject(node, f"min {low} is not below max {high}", fix="use a Clip with min < max")
        return cls(node, low, high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)

    def relax(self, bound: Interval, mode: str = "adaptive", lower_slope: torch.Tensor | None = None) -> Relaxation:
        if mode not in RELAXATION_MODES:
            raise ValueError(f"unknown relaxation mode '{mode}'; choose one of {', '.join(RELAXATION_MODES)}")
        cases = _Cases(bound, self.low, self.high)
        if mode == "optimizable" and lower_slope is not None:
            parameter = lower_slope.clamp(0.0, 1.0)
        elif mode == "zero":
            parameter = torch.zeros_like(bound.lower)
        elif mode == "same-slope":  # the free line parallel to the chord (Fast-Lin's choice)
            parameter = torch.where(cases.low_only, cases.chord_low_slope,
                                    torch.where(cases.high_only, cases.chord_high_slope, 1.0))
        else:
            parameter = self.initial_parameters(bound)
        return cases.lines(parameter)

    def reslope(self, base: Relaxation, bound: Interval, parameters: torch.Tensor) -> Relaxation:
        """relax(bound, "optimizable", parameters); every line depends on the case, so all are recomputed."""
        return self.relax(bound, "optimizable", parameters)

    def initial_parameters(self, bound: Interval) -> torch.Tensor:
        """Where the lines equal mode "adaptive"'s (the module doc's adaptive choices)."""
        cases = _Cases(bound, self.low, self.high)
        low_wide = (cases.upper - cases.a >= cases.a - cases.lower).to(bound.lower.dtype)
        high_wide = (cases.b - cases.lower >= cases.upper - cases.b).to(bound.lower.dtype)
        one = torch.ones_like(bound.lower)
        return torch.where(cases.low_only, low_wide, torch.where(cases.high_only, high_wide, one))

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list[Interval]) -> np.ndarray:
        """Exact rows for the neurons with no kink inside; for the others the convex hull of the graph
        (LP) or the pieces with one binary a kink (MILP, through y = min(max(z, a), b))."""
        z, bound = inputs[0], bounds[0]
        if not model.exact:
            cases = _Cases(bound, self.low, self.high)
            hull = cases.lines(torch.ones_like(bound.lower))  # p = 1: the hull's slanted edges
            y = encode_lines(model, z, sample(hull.lower_slope), sample(hull.lower_intercept),
                             sample(hull.upper_slope), sample(hull.upper_intercept))
            lower, upper = sample(bound.lower), sample(bound.upper)
            model.tighten(y, np.clip(lower, self.low, self.high), np.clip(upper, self.low, self.high))
            return y
        lower, upper = sample(bound.lower), sample(bound.upper)
        middle = _encode_max(model, z, self.low, lower, upper) if math.isfinite(self.low) else z
        low_side = np.maximum(lower, self.low)
        return _encode_min(model, middle, self.high, low_side, upper) if math.isfinite(self.high) else middle


class _Cases:
    """Where the kinks lie in each neuron's interval, and the lines of each case for a parameter p."""

    def __init__(self, bound: Interval, low: float, high: float):
        self.lower, self.upper = bound.lower, bound.upper
        # an absent or far-away kink is moved just outside the interval: the same case, finite arithmetic
        self.a = torch.clamp(torch.full_like(self.lower, low), min=self.lower - 1)
        self.b = torch.clamp(torch.full_like(self.upper, high), max=self.upper + 1)
        low_in, high_in = (self.lower < self.a) & (self.a < self.upper), (self.lower < self.b) & (self.b < self.upper)
        self.low_only, self.high_only, self.both = low_in & ~high_in, high_in & ~low_in, low_in & high_in
        width = (self.upper - self.lower).clamp_min(1e-12)
        self.chord_low_slope = (self.upper - self.a) / width  # (l, a) to (u, u)
        self.chord_high_slope = (self.b - self.lower) / width  # (l, l) to (u, b)

    def lines(self, p: torch.Tensor) -> Relaxation:
        a, b, lower, upper = self.a, self.b, self.lower, self.upper
        exact_slope = ((lower >= a) & (upper <= b)).to(lower.dtype)  # 1 on the identity piece, else 0
        exact_intercept = torch.where(upper <= a, a, torch.where(lower >= b, b, torch.zeros_like(a)))
        low_slope = torch.where(self.low_only, p, torch.where(self.high_only, self.chord_high_slope,
                                torch.where(self.both, p * (b - a) / (upper - a).clamp_min(1e-12), exact_slope)))
        high_slope = torch.where(self.low_only, self.chord_low_slope, torch.where(self.high_only, p,
                                 torch.where(self.both, p * (b - a) / (b - lower).clamp_min(1e-12), exact_slope)))
        # the lower line passes through (a, a), or (l, l) for the concave case; the upper through (b, b) or (l, a)
        low_point = torch.where(self.high_only, lower, a)
        high_x, high_y = torch.where(self.low_only, lower, b), torch.where(self.low_only, a, b)
        loose = self.low_only | self.high_only | self.both
        low_intercept = torch.where(loose, low_point - low_slope * low_point, exact_intercept)
        high_intercept = torch.where(loose, high_y - high_slope * high_x, exact_intercept)
        return Relaxation(low_slope, low_intercept, high_slope, high_intercept)


def _encode_max(model: LPModel, z: np.ndarray, a: float, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """y = max(z, a) exactly: y = z where l >= a, y = a where u <= a (its bounds), and a binary s where
    a lies inside (l, u): y >= z, y >= a, y <= z + (a - l)(1 - s), y <= a + (u - a) s."""
    y = model.variables(np.maximum(lower, a), np.maximum(upper, a), z.shape)
    pair = np.stack([y, z], -1)
    model.add_rows(pair, [1.0, -1.0], lower=0.0)
    model.add_rows(pair[lower >= a], [1.0, -1.0], upper=0.0)
    inside = (lower < a) & (upper > a)
    if inside.any():
        s = model.variables(0.0, 1.0, (int(inside.sum()),), integer=True)
        ones = np.ones(s.shape)
        triple = np.stack([y[inside], z[inside], s], -1)
        model.add_rows(triple, np.stack([ones, -ones, (a - lower[inside])], -1), upper=a - lower[inside])
        model.add_rows(np.stack([y[inside], s], -1), np.stack([ones, -(upper[inside] - a)], -1), upper=a)
    return y


def _encode_min(model: LPModel, z: np.ndarray, b: float, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """y = min(z, b) exactly: y = z where u <= b, y = b where l >= b (its bounds), and a binary s where b
    lies inside (l, u): y <= z, y <= b, y >= z - (u - b) s, y >= b - (b - l)(1 - s)."""
    y = model.variables(np.minimum(lower, b), np.minimum(upper, b), z.shape)
    pair = np.stack([y, z], -1)
    model.add_rows(pair, [1.0, -1.0], upper=0.0)
    model.add_rows(pair[upper <= b], [1.0, -1.0], lower=0.0)
    inside = (lower < b) & (upper > b)
    if inside.any():
        s = model.variables(0.0, 1.0, (int(inside.sum()),), integer=True)
        ones = np.ones(s.shape)
        triple = np.stack([y[inside], z[inside], s], -1)
        model.add_rows(triple, np.stack([ones, -ones, (upper[inside] - b)], -1), lower=0.0)
        model.add_rows(np.stack([y[inside], s], -1), np.stack([ones, -(b - lower[inside])], -1), lower=lower[inside])
    return y


def _limit(node: NodeInfo, position: int, attribute: str, default: float) -> float:
    """Clip's min or max: a constant input (opset 11+), an attribute (before), or absent."""
    if len(node.inputs) > position and node.inputs[position]:
        value = node.constants.get(node.inputs[position])
        if value is None:
            raise Clip.reject(node, f"its {attribute} is computed, not a constant", fix="export it as a constant")
        return float(np.asarray(value).reshape(-1)[0])
    return float(node.attributes.get(attribute, default))


@hookimpl
def verikit_layers(register) -> None:
    register(Clip)
