"""MaxPool: y = max over each window, with CNN-Cert's window relaxation (seed-papers 1.5).

A max is not elementwise: each output neuron y = max_i z_i is bounded by two lines over its whole
window that share their slopes w >= 0,
    sum_i w_i z_i + lower_intercept  <=  y  <=  sum_i w_i z_i + upper_intercept,
so `relax` returns a `WindowRelaxation` and `backward` scatters window coefficients back onto the
input. The relaxation holds for any input bounds (no preceding ReLU is assumed) and is exact when one
entry dominates its window; the relaxation `mode` does not apply to max pooling and is ignored.
Windows are gathered through a precomputed index map, so any spatial rank and any pads work; padded
positions are -inf (ONNX semantics) and never take part in a relaxation.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
import torch
import torch.nn.functional as F

from verikit.bounds import Interval
from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import LayerRule
from verikit.lp.encode import LPModel, sample

FLAT_WIDTH = 1e-12  # relative width under which an input counts as a constant


@dataclass(frozen=True)
class WindowRelaxation:
    """Shared-slope lines of a max over windows (module doc).

    weights: [B, *out_shape, window] (0 at padded positions and at entries that can never be the max);
    lower_intercept, upper_intercept: [B, *out_shape]."""

    weights: torch.Tensor
    lower_intercept: torch.Tensor
    upper_intercept: torch.Tensor


def window_index(spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                 pads: tuple[int, ...]) -> torch.Tensor:
    """Flat input position of every (output position, window entry): [*out_spatial, window].

    Padded positions point one past the end, at prod(spatial)."""
    size = prod(spatial)
    index = torch.arange(size).reshape(spatial)
    rank = len(spatial)
    widths = [w for dim in reversed(range(rank)) for w in (pads[dim], pads[rank + dim])]
    index = F.pad(index, widths, value=size)
    for dim, (extent, step) in enumerate(zip(kernel, strides)):
        index = index.unfold(dim, extent, step)
    return index.reshape(*index.shape[:rank], -1)


class MaxPool(LayerRule):
    """ONNX MaxPool with kernel_shape, strides and pads; dilations 1, ceil_mode 0, storage_order 0."""

    op_types = ("MaxPool",)

    def __init__(self, node: NodeInfo, kernel_shape: tuple[int, ...], strides: tuple[int, ...],
                 pads: tuple[int, ...]):
        super().__init__(node)
        self.kernel_shape, self.strides, self.pads = kernel_shape, strides, pads
        self.in_spatial = tuple(self.input_shapes[0][-len(kernel_shape):])
        self.window_index = window_index(self.in_spatial, kernel_shape, strides, pads)
        self.out_spatial = tuple(self.window_index.shape[:-1])

    @classmethod
    def build(cls, node: NodeInfo) -> "MaxPool":
        attributes = node.attributes
        if "kernel_shape" not in attributes:
            raise cls.reject(node, "has no kernel_shape attribute", fix="give the pooling window size")
        kernel = tuple(int(k) for k in attributes["kernel_shape"])
        rank = len(kernel)
        strides = tuple(int(s) for s in attributes.get("strides", [1] * rank))
        pads = tuple(int(p) for p in attributes.get("pads", [0] * 2 * rank))
        cls._check_attributes(node, kernel, strides, pads)
        spatial = node.input_shapes[0][-rank:]
        padded = [size + pads[dim] + pads[rank + dim] for dim, size in enumerate(spatial)]
        if any(k > p for k, p in zip(kernel, padded)):
            raise cls.reject(node, f"its window {list(kernel)} is larger than its padded input {padded}",
                             fix="re-export the model with consistent shapes")
        rule = cls(node, kernel, strides, pads)
        if tuple(rule.output_shape[-rank:]) != rule.out_spatial:
            raise cls.reject(node, f"its output shape {list(rule.output_shape)} does not match the pooling "
                                   f"arithmetic ({list(rule.out_spatial)} spatially)",
                             fix="re-export the model with consistent shapes")
        return rule

    @classmethod
    def _check_attributes(cls, node: NodeInfo, kernel: tuple[int, ...], strides: tuple[int, ...],
                          pads: tuple[int, ...]) -> None:
        """Reject what this rule does not implement, naming the attribute and its value."""
        attributes, rank = node.attributes, len(kernel)
        auto_pad = attributes.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID"):
            raise cls.reject(node, f"auto_pad={auto_pad} is not supported", fix="export with explicit pads")
        if any(int(d) != 1 for d in attributes.get("dilations", [1] * rank)):
            raise cls.reject(node, f"dilations={list(attributes['dilations'])} is not supported (only 1)",
                             fix="use an undilated pooling window")
        for key in ("ceil_mode", "storage_order"):
            if int(attributes.get(key, 0)) != 0:
                raise cls.reject(node, f"{key}={attributes[key]} is not supported (only 0)",
                                 fix=f"export with {key}=0")
        shape = node.input_shapes[node.inputs.index(node.computed_inputs[0])]
        if shape is None or len(shape) != rank + 2 or len(strides) != rank or len(pads) != 2 * rank:
            raise cls.reject(node, f"kernel_shape {list(kernel)}, strides {list(strides)} and pads "
                                   f"{list(pads)} do not fit the input shape {shape}",
                             fix="give one kernel size and stride per spatial axis and two pads per axis")
        if any(s < 1 for s in strides) or any(p < 0 or p >= kernel[i % rank] for i, p in enumerate(pads)):
            raise cls.reject(node, f"strides {list(strides)} / pads {list(pads)} are out of range",
                             fix="use strides >= 1 and 0 <= pad < kernel size")

    def windows(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        """[*lead, *in_spatial] -> [*lead, *out_spatial, window], padded positions set to `fill`."""
        lead = x.shape[: x.dim() - len(self.in_spatial)]
        flat = x.reshape(*lead, -1)
        flat = torch.cat([flat, flat.new_full((*lead, 1), fill)], dim=-1)
        index = self.window_index.to(x.device)
        return flat[..., index.flatten()].reshape(*lead, *index.shape)

    def scatter(self, window_values: torch.Tensor) -> torch.Tensor:
        """The transpose of `windows`: [*lead, *out_spatial, window] summed back onto [*lead, *in_spatial]."""
        index = self.window_index.to(window_values.device)
        lead = window_values.shape[: window_values.dim() - index.dim()]
        flat = window_values.reshape(*lead, -1)
        total = flat.new_zeros(*lead, prod(self.in_spatial) + 1).index_add(-1, index.flatten(), flat)
        return total[..., :-1].reshape(*lead, *self.in_spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.windows(x, float("-inf")).amax(dim=-1)

    def interval(self, bound: Interval) -> Interval:
        """Max is monotone in every entry: pool the lower and the upper bounds."""
        return Interval(self.forward(bound.lower), self.forward(bound.upper))

    def relax(self, bound: Interval, mode: str = "adaptive",
              lower_slope: torch.Tensor | None = None) -> WindowRelaxation:
        """CNN-Cert's gamma/weights lines for every window; `mode` and `lower_slope` do not apply."""
        real = (self.window_index < prod(self.in_spatial)).to(bound.lower.device)
        lower, upper = self.windows(bound.lower.double(), 0.0), self.windows(bound.upper.double(), 0.0)
        lines = window_lines(lower, upper, real)
        dtype = bound.lower.dtype
        return WindowRelaxation(lines.weights.to(dtype), lines.lower_intercept.to(dtype),
                                lines.upper_intercept.to(dtype))

    def backward(self, coefficients: torch.Tensor, relaxation: WindowRelaxation | None = None,
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Upper bound: A.y <= (A w scattered).z + A+ . upper_intercept + A- . lower_intercept."""
        if not isinstance(relaxation, WindowRelaxation):
            raise ValueError(f"MaxPool.backward needs the WindowRelaxation from MaxPool.relax, "
                             f"got {type(relaxation).__name__}")
        rows = coefficients.dim() - relaxation.upper_intercept.dim()
        view = lambda t: t.reshape(t.shape[:1] + (1,) * rows + t.shape[1:])  # noqa: E731  [B,..] -> [B,1,..]
        positive, negative = coefficients.clamp(min=0), coefficients.clamp(max=0)
        bias = positive * view(relaxation.upper_intercept) + negative * view(relaxation.lower_intercept)
        pushed = self.scatter(coefficients.unsqueeze(-1) * view(relaxation.weights))
        return [pushed], bias.flatten(start_dim=1 + rows).sum(-1)

    def backward_patches(self, patches, relaxation: WindowRelaxation | None = None):
        """`backward` on CNN-Cert window coefficients (verikit.propagate.patches): every entry spreads
        over its pooling window with the relaxation's weights, like a conv with the pool's kernel and
        stride. None for 1-D and 3-D pooling."""
        if len(self.kernel_shape) != 2 or not isinstance(relaxation, WindowRelaxation):
            return None
        positive = patches.with_values(patches.values.clamp(min=0))
        negative = patches.with_values(patches.values.clamp(max=0))
        bias = positive.dot(relaxation.upper_intercept) + negative.dot(relaxation.lower_intercept)
        pushed = patches.spread_windows(relaxation.weights, self.kernel_shape, self.strides, self.pads[:2],
                                        self.in_spatial)
        return [pushed], bias


    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list[Interval]) -> np.ndarray:
        """y >= every entry of its window, and: LP, the window lines of `relax` as two rows; MILP, one binary
        a_i per entry that can be the max, sum a = 1, y <= z_i + (max u - l_i)(1 - a_i) (exact)."""
        entries = self.windows(torch.from_numpy(inputs[0].astype(np.float64)), -1.0).numpy().astype(np.int64)
        real, columns = entries >= 0, np.maximum(entries, 0)
        y = model.free(self.output_shape)
        outputs = np.broadcast_to(y[..., None], entries.shape)
        model.add_rows(np.stack([outputs, columns], -1)[real], [1.0, -1.0], lower=0.0)
        if model.exact:
            lower, upper = (np.where(real, sample(self.windows(t.double(), 0.0)), -np.inf)
                            for t in (bounds[0].lower, bounds[0].upper))
            candidate = real & (upper >= lower.max(-1, keepdims=True))
            picks = model.variables(0.0, candidate.astype(float), entries.shape, integer=True)
            model.add_rows(picks, 1.0, lower=1.0, upper=1.0)
            slack = np.where(candidate, np.where(candidate, upper, -np.inf).max(-1, keepdims=True) - lower, 0.0)
            ones = np.ones(entries.shape)
            model.add_rows(np.stack([outputs, columns, picks], -1)[candidate],
                           np.stack([ones, -ones, slack], -1)[candidate], upper=slack[candidate])
        else:
            lines = self.relax(bounds[0])
            model.add_rows(np.concatenate([y[..., None], columns], -1),
                           np.concatenate([np.ones(y.shape + (1,)), -sample(lines.weights)], -1),
                           lower=sample(lines.lower_intercept), upper=sample(lines.upper_intercept))
        return y

def window_lines(lower: torch.Tensor, upper: torch.Tensor, real: torch.Tensor) -> WindowRelaxation:
    """Shared-slope lines of max over the last axis, for entries in [lower, upper] where `real`.

    Candidates can be the max (u_i >= L = max_j l_j). gamma in [L, min u] makes the upper line
    sum_i w_i (z_i - l_i) + gamma with w_i = (u_i - gamma) / (u_i - l_i) tight at every vertex; with
    W = sum w_i, the lower intercept (1 - W) * (L if W <= 1 else max u) uses sum w_i z_i <= W * y."""
    top_lower = torch.where(real, lower, float("-inf")).amax(-1, keepdim=True)
    candidate = real & (upper >= top_lower)
    width = upper - lower
    flat = candidate & (width <= FLAT_WIDTH * (1 + upper.abs()))
    slanted = candidate & ~flat
    inverse = torch.where(slanted, 1 / torch.where(slanted, width, torch.ones_like(width)), 0.0)
    inverse_sum = inverse.sum(-1, keepdim=True)
    gamma = ((upper * inverse).sum(-1, keepdim=True) - 1) / inverse_sum.clamp(min=1e-300)
    top_upper = torch.where(candidate, upper, float("-inf")).amax(-1, keepdim=True)
    min_upper = torch.where(candidate, upper, float("inf")).amin(-1, keepdim=True)
    gamma = torch.maximum(torch.minimum(gamma, min_upper), top_lower)
    flat_top = torch.where(flat, upper, float("-inf")).amax(-1, keepdim=True)
    gamma = torch.where(flat.any(-1, keepdim=True), torch.maximum(flat_top, top_lower), gamma)

    weights = torch.where(slanted, ((upper - gamma) * inverse).clamp(0, 1), 0.0)
    leftover = (1 - weights.sum(-1, keepdim=True)).clamp(0, 1) / flat.sum(-1, keepdim=True).clamp(min=1)
    weights = torch.where(flat, leftover, weights)
    total = weights.sum(-1)
    upper_intercept = gamma.squeeze(-1) - (weights * torch.where(real, lower, 0.0)).sum(-1)
    reference = torch.where(total <= 1, top_lower.squeeze(-1), top_upper.squeeze(-1))
    return WindowRelaxation(weights, (1 - total) * reference, upper_intercept)


@hookimpl
def verikit_layers(register) -> None:
    register(MaxPool)
