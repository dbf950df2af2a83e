"""Relu and LeakyRelu: piecewise-linear activations and their per-neuron relaxations (seed-papers 1.3).

Both are f(z) = max(z, alpha * z) with 0 <= alpha <= 1 (alpha = 0 for Relu), a convex function. On an
unstable interval l < 0 < u the chord from (l, f(l)) to (u, f(u)) is the tightest upper line, and every
line through the origin with a slope in [alpha, 1] is a lower line; the relaxation mode picks that slope:
  "same-slope"  the chord's slope (Fast-Lin),   "adaptive"  1 if u >= -l else alpha (CROWN),
  "zero"        alpha (CNN-Cert-Zero),          "optimizable"  the given slope clamped into [alpha, 1].
Stable neurons are exact: slope alpha when u <= 0, slope 1 when l >= 0.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from verikit.bounds import Interval, Relaxation
from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import RELAXATION_MODES, ElementwiseRule
from verikit.lp.encode import LPModel, sample


def leaky_relu_relaxation(bound: Interval, alpha: float, mode: str = "adaptive",
                          lower_slope: torch.Tensor | None = None) -> Relaxation:
    """Lines sandwiching max(z, alpha z) on [bound.lower, bound.upper], per neuron (see module doc)."""
    if mode not in RELAXATION_MODES:
        raise ValueError(f"unknown relaxation mode '{mode}'; choose one of {', '.join(RELAXATION_MODES)}")
    lower, upper = bound.lower, bound.upper  # scalars in torch.where: no full-size constant tensors
    inactive = upper <= 0
    active = (lower >= 0) & ~inactive
    unstable = ~(inactive | active)
    chord = torch.where(unstable, (upper - alpha * lower) / torch.where(unstable, upper - lower, 1.0), 0.0)
    one, slope = lower.new_tensor(1.0), lower.new_tensor(alpha)  # 0-d, in the bounds' dtype
    stable_slope = torch.where(active, one, slope)

    upper_slope = torch.where(unstable, chord, stable_slope)
    upper_intercept = torch.where(unstable, (alpha - chord) * lower, 0.0)
    chosen = _unstable_lower_slope(lower, upper, alpha, chord, mode, lower_slope)
    lower_slope_out = torch.where(unstable, chosen, stable_slope)
    return Relaxation(lower_slope_out, torch.zeros_like(lower_slope_out), upper_slope, upper_intercept)


def _unstable_lower_slope(lower: torch.Tensor, upper: torch.Tensor, alpha: float, chord: torch.Tensor,
                          mode: str, lower_slope: torch.Tensor | None) -> torch.Tensor:
    """The lower line's slope for unstable neurons, by relaxation mode (always within [alpha, 1])."""
    if mode == "same-slope":
        return chord
    if mode == "zero":
        return torch.full_like(lower, alpha)
    if mode == "optimizable" and lower_slope is not None:
        return lower_slope.clamp(min=alpha, max=1.0)
    return torch.where(upper >= -lower, lower.new_tensor(1.0), lower.new_tensor(alpha))


def leaky_relu_reslope(base: Relaxation, bound: Interval, alpha: float, lower_slope: torch.Tensor) -> Relaxation:
    """`base` (any mode's relaxation on `bound`) with the unstable neurons' lower slopes set to `lower_slope`
    clamped into [alpha, 1]: the "optimizable" relaxation, without recomputing the slope-free lines
    at every step of an ascent on the slopes."""
    unstable = (bound.lower < 0) & (bound.upper > 0)
    slope = torch.where(unstable, lower_slope.clamp(min=alpha, max=1.0), base.lower_slope)
    return Relaxation(slope, base.lower_intercept, base.upper_slope, base.upper_intercept)


def encode_leaky_relu(model: LPModel, z: np.ndarray, bound: Interval, alpha: float) -> np.ndarray:
    """y = max(z, alpha z): stable neurons exactly; unstable ones by the triangle y >= z, y >= alpha z,
    y <= chord (LP), or exactly with a binary a (MILP): y <= z - (1-alpha) l (1-a), y <= alpha z + (1-alpha) u a."""
    lower, upper = sample(bound.lower), sample(bound.upper)
    y = model.free(z.shape)
    stable = (lower >= 0) | (upper <= 0)
    model.equal(y[stable], z[stable][:, None], np.where(lower >= 0, 1.0, alpha)[stable][:, None])
    out, into, low, high = y[~stable], z[~stable], lower[~stable], upper[~stable]
    pair, ones = np.stack([out, into], -1), np.ones(into.shape)
    model.add_rows(pair, [1.0, -1.0], lower=0.0)
    model.add_rows(pair, [1.0, -alpha], lower=0.0)
    if model.exact:
        active = model.variables(0.0, 1.0, into.shape, integer=True)
        triple = np.stack([out, into, active], -1)
        model.add_rows(triple, np.stack([ones, -ones, -(1 - alpha) * low], -1), upper=-(1 - alpha) * low)
        model.add_rows(triple, np.stack([ones, -alpha * ones, -(1 - alpha) * high], -1), upper=0.0)
    else:
        chord = (high - alpha * low) / (high - low)
        model.add_rows(pair, np.stack([ones, -chord], -1), upper=(alpha - chord) * low)
    return y


class Relu(ElementwiseRule):
    """ONNX Relu: y = max(z, 0)."""

    op_types = ("Relu",)
    kinks = (0.0,)

    @classmethod
    def build(cls, node: NodeInfo) -> "Relu":
        return cls(node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def relax(self, bound: Interval, mode: str = "adaptive",
              lower_slope: torch.Tensor | None = None) -> Relaxation:
        return leaky_relu_relaxation(bound, 0.0, mode, lower_slope)

    def reslope(self, base: Relaxation, bound: Interval, parameters: torch.Tensor) -> Relaxation:
        """relax(bound, "optimizable", parameters) from `base`, any relaxation on `bound`."""
        return leaky_relu_reslope(base, bound, 0.0, parameters)

    def initial_parameters(self, bound: Interval) -> torch.Tensor:
        """CROWN's adaptive lower slopes: 1 where u >= -l, else 0 (clamped to [alpha, 1] when used)."""
        return (bound.upper >= -bound.lower).to(bound.lower.dtype)

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list[Interval]) -> np.ndarray:
        """Triangle relaxation (LP) or big-M with a binary (MILP) for unstable neurons; see encode_leaky_relu."""
        return encode_leaky_relu(model, inputs[0], bounds[0], 0.0)


class LeakyRelu(ElementwiseRule):
    """ONNX LeakyRelu: y = z for z >= 0 and alpha * z below, for 0 <= alpha <= 1 (default 0.01)."""

    op_types = ("LeakyRelu",)
    kinks = (0.0,)

    def __init__(self, node: NodeInfo, alpha: float):
        super().__init__(node)
        self.alpha = alpha

    @classmethod
    def build(cls, node: NodeInfo) -> "LeakyRelu":
        alpha = float(node.attributes.get("alpha", 0.01))
        if not 0.0 <= alpha <= 1.0:
            raise cls.reject(node, f"alpha={alpha} is outside [0, 1], where the activation is not convex",
                             fix="use a LeakyRelu with 0 <= alpha <= 1")
        return cls(node, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.alpha)

    def relax(self, bound: Interval, mode: str = "adaptive",
              lower_slope: torch.Tensor | None = None) -> Relaxation:
        return leaky_relu_relaxation(bound, self.alpha, mode, lower_slope)

    def reslope(self, base: Relaxation, bound: Interval, parameters: torch.Tensor) -> Relaxation:
        """relax(bound, "optimizable", parameters) from `base`, any relaxation on `bound`."""
        return leaky_relu_reslope(base, bound, self.alpha, parameters)

    initial_parameters = Relu.initial_parameters

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list[Interval]) -> np.ndarray:
        """Like Relu's, with the lower lines y >= z and y >= alpha z; see encode_leaky_relu."""
        return encode_leaky_relu(model, inputs[0], bounds[0], self.alpha)


# The names other modules' briefs use for these rules.
ReluRule = Relu
LeakyReluRule = LeakyRelu


@hookimpl
def verikit_layers(register) -> None:
    register(Relu)
    register(LeakyRelu)
