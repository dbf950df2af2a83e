"""CNN-Cert's receptive-field (patch) coefficients (seed-papers 1.4-1.8).

The dense engine (verikit.propagate.backward) bounds a neuron of a conv layer with coefficients over
every neuron of every value it walks through. CNN-Cert keeps, for each neuron (row group r, position
y, x) of the value being bounded, coefficients only over its receptive field in the value reached, a
[C, H, W] map: a window of P_h x P_w positions and all C channels whose entry (p, q) lies at
    (S_h * y + p - O_h,  S_w * x + q - O_w)            (stride S, offset O),
kept at zero wherever that falls outside the map. The windows form a batch of small images, so
  - a convolution grows them by a transposed convolution with its kernel (`Patches.spread`),
  - a nonlinearity multiplies each entry by the slope of the neuron it points to (`Patches.gather`),
  - pooling spreads each entry over its window with per-neuron weights (`Patches.spread_windows`),
and at the input the region is concretized over each window (dual norm: entries outside are zero).

Layer rules push patches through `rule.backward_patches(patches, relaxation)` (None when they cannot);
the generic elementwise rule is here. Everything else (Flatten, Gemm, ...) gets dense coefficients:
`backward_upper` walks the graph like the dense engine and switches to dense where it must, and
`patch_bounds` runs it layer by layer in the dense engine's own loop (backward.bound_layers).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

import torch
import torch.nn.functional as F

from verikit import deadline
from verikit.bounds import Interval, LinearBound, Relaxation
from verikit.graph import Graph, Node
from verikit.layers.base import RELAXATION_MODES, ElementwiseRule
from verikit.propagate.backward import (bound_layers, interval_of_rows, node_relaxation, prepared,
                                       upstream_in_reverse, values_to_relax)
from verikit.region import Box, LpBall, Region, dual_norm

WINDOW = (-3, -2, -1)  # the channel and window dims of Patches.values


@dataclass(frozen=True)
class Patches:
    """Coefficients of rows over windows of a [C, H, W] map (module doc).

    values: [B, R, Ho, Wo, C, Ph, Pw] (B may be 1 for all problems); row r at position (y, x) is dense
    row r * Ho * Wo + y * Wo + x. stride and offset: S and O per spatial dim; space: (H, W) of the map."""

    values: torch.Tensor
    stride: tuple[int, int]
    offset: tuple[int, int]
    space: tuple[int, int]

    @classmethod
    def identity(cls, shape: tuple[int, ...], first: int, count: int, like: torch.Tensor) -> "Patches":
        """Rows +e_c then -e_c for channels first..first+count-1 at every position of a (1, C, H, W) map."""
        channels, height, width = shape[1:]
        eye = like.new_zeros(count, channels)
        index = torch.arange(count, device=like.device)
        eye[index, first + index] = 1
        signed = torch.cat([eye, -eye]).reshape(1, 2 * count, 1, 1, channels, 1, 1)
        return cls(signed.expand(1, 2 * count, height, width, channels, 1, 1), (1, 1), (0, 0), (height, width))

    @property
    def window(self) -> tuple[int, int]:
        return tuple(self.values.shape[-2:])

    @property
    def positions(self) -> tuple[int, int]:
        return tuple(self.values.shape[2:4])

    @property
    def rows(self) -> int:
        return prod(self.values.shape[1:4])

    def with_values(self, values: torch.Tensor) -> "Patches":
        """The same windows holding other values."""
        return replace(self, values=values)

    def zero_bias(self) -> torch.Tensor:
        return self.values.new_zeros(self.values.shape[0], self.rows)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The entry of a map-shaped tensor [b, 1, C or 1, H or 1, W or 1] that each window entry points
        to: [b, 1, Ho, Wo, C or 1, Ph, Pw], 0 outside the map. A spatially constant tensor gives its value
        everywhere, which is only right against values that are zero outside the map (all of ours)."""
        b, _, c, height, width = tensor.shape
        if height == 1 and width == 1:
            return tensor.reshape(b, 1, 1, 1, c, 1, 1)
        (ph, pw), (ho, wo) = self.window, self.positions
        (sh, sw), (oh, ow), (full_h, full_w) = self.stride, self.offset, self.space
        need_h, need_w = sh * (ho - 1) + ph, sw * (wo - 1) + pw
        maps = tensor.expand(b, 1, c, full_h, full_w).reshape(b, c, full_h, full_w)
        maps = F.pad(maps, (ow, max(0, need_w - ow - full_w), oh, max(0, need_h - oh - full_h)))
        windows = maps[:, :, :need_h, :need_w].unfold(2, ph, sh).unfold(3, pw, sw)  # [b, c, ho, wo, ph, pw]
        return windows.permute(0, 2, 3, 1, 4, 5).unsqueeze(1)

    def scaled(self, tensor: torch.Tensor) -> "Patches":
        """Every entry times the entry of a map-shaped tensor it points to."""
        return self.with_values(self.values * self.gather(tensor))

    def dot(self, tensor: torch.Tensor) -> torch.Tensor:
        """[B, rows]: each row's window dotted with a map-shaped tensor (see `gather`)."""
        b, _, c, height, width = tensor.shape
        if height == 1 and width == 1:  # per channel: sum the window first
            total = (self.values.sum((-2, -1)) * tensor.reshape(b, 1, 1, 1, c)).sum(-1)
            return total.reshape(total.shape[0], -1)
        values = self.values.flatten(2, 3).flatten(-3)  # [B, R, positions, entries]
        gathered = self.gather(tensor).expand(-1, -1, -1, -1, self.values.shape[4], -1, -1)
        total = torch.einsum("brpk,bpk->brp", values, gathered[:, 0].flatten(1, 2).flatten(-3))
        return total.reshape(total.shape[0], -1)

    def inside(self) -> bool:
        """True when no window entry can point outside the map."""
        (ph, pw), (ho, wo), (height, width) = self.window, self.positions, self.space
        return (self.offset == (0, 0) and self.stride[0] * (ho - 1) + ph <= height
                and self.stride[1] * (wo - 1) + pw <= width)

    def masked(self) -> "Patches":
        """Entries pointing outside the map (padding) set to zero."""
        if self.inside():
            return self
        return self.scaled(self.values.new_ones(1, 1, 1, *self.space))

    def _moved(self, values: torch.Tensor, stride: tuple[int, ...], begins: tuple[int, ...],
               space: tuple[int, ...]) -> "Patches":
        """New windows after a layer of `stride` and leading pads `begins` onto a map of `space`."""
        return Patches(values, (self.stride[0] * stride[0], self.stride[1] * stride[1]),
                       (self.offset[0] * stride[0] + begins[0], self.offset[1] * stride[1] + begins[1]),
                       tuple(space)).masked()

    def spread(self, kernel: torch.Tensor, stride: tuple[int, ...], dilation: tuple[int, ...],
               begins: tuple[int, ...], groups: int, space: tuple[int, ...]) -> "Patches":
        """Through y = conv(x, kernel) (x of spatial size `space`, leading pads `begins`): windows over y
        become windows over x by a transposed convolution; entries landing in the padding are dropped."""
        b, r, ho, wo, c, ph, pw = self.values.shape
        grown = F.conv_transpose2d(self.values.reshape(-1, c, ph, pw), kernel, None, tuple(stride), 0, 0,
                                   groups, tuple(dilation))
        return self._moved(grown.reshape(b, r, ho, wo, *grown.shape[1:]), stride, begins, space)

    def spread_windows(self, weights: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
                       begins: tuple[int, ...], space: tuple[int, ...]) -> "Patches":
        """Through a pooling y[c, i, j] = sum_(k, l) weights[c, i, j, k * kw + l] * x[c, s i + k - b, ...]
        with per-neuron weights [b, 1, C, H_y, W_y, kh * kw]: each entry spreads over its own window."""
        (kh, kw), (sh, sw) = kernel, stride
        b, r, ho, wo, c, ph, pw = self.values.shape
        grown = self.values.new_zeros(max(b, weights.shape[0]), r, ho, wo, c, sh * (ph - 1) + kh,
                                      sw * (pw - 1) + kw)
        for k in range(kh):
            for l in range(kw):
                spot = grown[..., k:k + sh * (ph - 1) + 1:sh, l:l + sw * (pw - 1) + 1:sw]
                spot += self.values * self.gather(weights[..., k * kw + l])
        return self._moved(grown, stride, begins, space)

    def placed(self, window: tuple[int, int], offset: tuple[int, int]) -> torch.Tensor:
        """The values inside a larger window with a larger (or equal) offset, zero around."""
        (ph, pw), (dh, dw) = self.window, (offset[0] - self.offset[0], offset[1] - self.offset[1])
        return F.pad(self.values, (dw, window[1] - pw - dw, dh, window[0] - ph - dh))

    def to_dense(self) -> torch.Tensor:
        """Dense coefficients [B, rows, 1, C, H, W]: each row's window placed in a zero map."""
        b, r, ho, wo, c, ph, pw = self.values.shape
        (sh, sw), (oh, ow), (height, width) = self.stride, self.offset, self.space
        full_h, full_w = max(sh * (ho - 1) + ph, oh + height), max(sw * (wo - 1) + pw, ow + width)
        device = self.values.device
        rows = sh * torch.arange(ho, device=device)[:, None] + torch.arange(ph, device=device)  # [ho, ph]
        cols = sw * torch.arange(wo, device=device)[:, None] + torch.arange(pw, device=device)  # [wo, pw]
        flat_index = rows[:, None, :, None] * full_w + cols[None, :, None, :]  # [ho, wo, ph, pw]
        index = flat_index.reshape(1, 1, ho, wo, 1, ph * pw).expand(b, r, ho, wo, c, ph * pw)
        dense = self.values.new_zeros(b, r, ho, wo, c, full_h * full_w)
        dense.scatter_(-1, index, self.values.reshape(b, r, ho, wo, c, ph * pw))
        dense = dense.reshape(b, r, ho, wo, c, full_h, full_w)[..., oh:oh + height, ow:ow + width]
        return dense.reshape(b, r * ho * wo, 1, c, height, width)


def push_elementwise(patches: Patches, relaxation: Relaxation) -> tuple[list[Patches], torch.Tensor]:
    """ElementwiseRule.backward on windows: positive entries take the upper line, negative ones the
    lower line, written as  A * lower + A+ * (upper - lower)  so that equal lines cost one product."""
    values = patches.values
    slope_gap = relaxation.upper_slope - relaxation.lower_slope
    intercept_gap = relaxation.upper_intercept - relaxation.lower_intercept
    positive = values.clamp(min=0) if bool(slope_gap.any() or intercept_gap.any()) else None
    pushed = values * _gathered(patches, relaxation.lower_slope)
    if bool(slope_gap.any()):
        pushed = pushed + positive * _gathered(patches, slope_gap)
    bias = patches.zero_bias()
    if bool(relaxation.lower_intercept.any()):
        bias = bias + patches.dot(relaxation.lower_intercept)
    if bool(intercept_gap.any()):
        bias = bias + patches.with_values(positive).dot(intercept_gap)
    return [patches.with_values(pushed)], bias


def _gathered(patches: Patches, tensor: torch.Tensor) -> torch.Tensor:
    """`patches.gather(tensor)` laid out contiguously (products with it run several times faster)."""
    return patches.gather(tensor).contiguous()


def merge(first, second):
    """The sum of two coefficient sets on one value: patches when both are patches with the same
    stride (the union window, each placed at its offset), dense otherwise."""
    if first is None:
        return second
    if isinstance(first, Patches) and isinstance(second, Patches) and first.stride == second.stride:
        offset = tuple(max(a, b) for a, b in zip(first.offset, second.offset))
        far = tuple(max(p - o, q - u) for p, o, q, u in zip(first.window, first.offset, second.window, second.offset))
        window = tuple(f + o for f, o in zip(far, offset))
        return replace(first, values=first.placed(window, offset) + second.placed(window, offset), offset=offset)
    return dense(first) + dense(second)


def dense(coefficients) -> torch.Tensor:
    return coefficients.to_dense() if isinstance(coefficients, Patches) else coefficients


def is_map(shape: tuple[int, ...]) -> bool:
    """Patches apply to 2-D maps of one ONNX sample: shape (1, C, H, W)."""
    return len(shape) == 4 and shape[0] == 1


@dataclass
class Walk:
    """What one layer-by-layer bound computation shares: the graph, the region, the relaxation mode,
    the bounds found so far and the relaxations made from them, and the size limits."""

    graph: Graph
    region: Region
    mode: str
    bounds: dict[str, Interval]
    relaxations: dict[str, object]
    batch_rows: int = 2048  # problems x dense rows per pass
    max_entries: int = 2 ** 24  # a cap on coefficient entries per pass of patch rows
    patch_limit: float = 1.0  # go dense once a window covers more than this times its map
    peak_entries: int = 0  # the most coefficient entries held at once in the last walk


def backward_upper(walk: Walk, target: str, start) -> torch.Tensor:
    """Upper bound [B, rows] over the region of `start . target` (Patches, or dense [B, rows, *shape])."""
    graph = walk.graph
    pending = {target: start}
    rows = start.rows if isinstance(start, Patches) else start.shape[1]
    bias = _zeros(walk, rows)
    for node in upstream_in_reverse(graph, target):
        coefficients = pending.pop(node.output, None)
        if coefficients is None:
            continue
        deadline.check()
        relaxation = None if node.linear else _relaxation(walk, node)
        pushed, node_bias = _push(node, coefficients, relaxation)
        bias = bias + node_bias
        for value, part in zip(node.inputs, pushed):
            pending[value] = merge(pending.get(value), _compact(part, walk.patch_limit))
        walk.peak_entries = max(walk.peak_entries, sum(_entries(c) for c in pending.values()))
    return _concretize_upper(walk, pending.get(graph.input_name), bias)


def bound_value(walk: Walk, value: str) -> Interval:
    """Bounds [B, *shape] of every neuron of `value`: identity patches on maps, dense rows otherwise."""
    shape = walk.graph.shapes[value]
    like = walk.bounds[walk.graph.input_name].lower
    if not is_map(shape):
        size = prod(shape)
        rows = torch.eye(size, dtype=like.dtype, device=like.device).reshape(1, size, *shape)
        flat = bound_rows(walk, value, rows)
        return Interval(flat.lower.reshape(-1, *shape), flat.upper.reshape(-1, *shape))
    channels, positions = shape[1], prod(shape[2:])
    lowers, uppers = [], []
    first, step = 0, 1  # the first pass measures the entries one channel needs, the rest fill max_entries
    while first < channels:
        count = min(step, channels - first)
        walk.peak_entries = 0
        upper = backward_upper(walk, value, Patches.identity(shape, first, count, like))
        uppers.append(upper[:, :count * positions])
        lowers.append(-upper[:, count * positions:])
        first += count
        step = max(1, walk.max_entries * count // max(1, walk.peak_entries))
    return Interval(torch.cat(lowers, 1).reshape(-1, *shape), torch.cat(uppers, 1).reshape(-1, *shape))


def bound_rows(walk: Walk, target: str, coefficients: torch.Tensor, sides: str = "both") -> Interval:
    """Bounds [B, K] of dense rows `coefficients . target` ([B or 1, K, *shape]), in chunks of rows."""
    batch = walk.region.batch
    step = max(1, walk.batch_rows // batch)
    lowers, uppers = [], []
    for first in range(0, coefficients.shape[1], step):
        part = coefficients[:, first:first + step]
        part = part.expand(batch, *part.shape[1:])
        stacked = {"both": [part, -part], "upper": [part], "lower": [-part]}[sides]
        upper = backward_upper(walk, target, torch.cat(stacked, 1))
        infinite = torch.full_like(upper[:, :part.shape[1]], float("inf"))
        uppers.append(infinite if sides == "lower" else upper[:, :part.shape[1]])
        lowers.append(-infinite if sides == "upper" else -upper[:, -part.shape[1]:])
    return Interval(torch.cat(lowers, 1), torch.cat(uppers, 1))


def patch_bounds(graph: Graph, region: Region, coefficients: torch.Tensor, mode: str,
                   dtype: torch.dtype = torch.float32, intermediate: dict[str, Interval] | None = None, *,
                   intersect_ibp: bool = False, batch_rows: int = 2048, max_entries: int = 2 ** 24,
                   patch_limit: float = 1.0, sides: str = "both") -> Interval:
    """Bounds [B, K] of `coefficients @ output` ([B or 1, K, n_out]) with patch coefficients wherever
    the graph allows; same contract as verikit.propagate.backward.compute_bounds."""
    if mode not in RELAXATION_MODES:
        raise ValueError(f"unknown relaxation mode {mode!r}: use one of {', '.join(RELAXATION_MODES)}")
    graph, region, coefficients, known = prepared(graph, region, coefficients, dtype, intermediate)
    walk = Walk(graph, region, mode, {}, {}, batch_rows, max_entries, patch_limit)
    bounds = bound_layers(graph, region, known, lambda value, _: bound_value(walk, value),
                          intersect_ibp=intersect_ibp, bounds=walk.bounds)
    if intermediate is not None:
        intermediate.update({name: bounds[name] for name in values_to_relax(graph) if name in bounds})
    rows = coefficients.reshape(coefficients.shape[0], coefficients.shape[1], *graph.output_shape)
    result = bound_rows(walk, graph.output_name, rows, sides)
    if intersect_ibp and graph.output_name in bounds:
        result = result.intersect(interval_of_rows(coefficients, bounds[graph.output_name]))
    return result


def patch_capable(node: Node) -> bool:
    """Whether the node's rule can push patches at all (it may still decline for some shapes)."""
    return _generic_elementwise(node.rule) or node.rule.offers("backward_patches")


def _generic_elementwise(rule) -> bool:
    return isinstance(rule, ElementwiseRule) and type(rule).backward is ElementwiseRule.backward


def _push(node: Node, coefficients, relaxation):
    """The node's backward step on patches when its rule can take them, else on dense coefficients."""
    if isinstance(coefficients, Patches):
        pushed = None
        if _generic_elementwise(node.rule) and isinstance(relaxation, Relaxation):
            pushed = push_elementwise(coefficients, relaxation)
        elif node.rule.offers("backward_patches"):
            pushed = node.rule.backward_patches(coefficients, relaxation)
        if pushed is not None:
            return pushed
        coefficients = coefficients.to_dense()
    return node.rule.backward(coefficients, relaxation)


def _compact(coefficients, patch_limit: float):
    """Dense coefficients once a window is wider than `patch_limit` times its map (no saving left)."""
    if isinstance(coefficients, Patches) and prod(coefficients.window) > patch_limit * prod(coefficients.space):
        return coefficients.to_dense()
    return coefficients


def _concretize_upper(walk: Walk, coefficients, bias: torch.Tensor) -> torch.Tensor:
    """Upper bound over the region of `coefficients . input + bias` (None: just the bias)."""
    region, graph = walk.region, walk.graph
    if coefficients is None:
        return bias
    if isinstance(coefficients, Patches):
        return _patch_upper(region, graph.input_shape, coefficients) + bias
    batch, rows = bias.shape
    flat = coefficients.expand(batch, *coefficients.shape[1:]).reshape(batch, rows, graph.input_size)
    return region.concretize(LinearBound(flat, bias)).upper


def _patch_upper(region: Region, input_shape: tuple[int, ...], patches: Patches) -> torch.Tensor:
    """max over the region of each row's window . input: Box by centre and radius, LpBall by the dual
    norm over the window (the whole coefficient vector is zero outside it), capped by its domain box."""
    shape = (-1, 1, *input_shape[1:])
    if isinstance(region, Box):
        radius = ((region.upper - region.lower) / 2).reshape(shape)
        return patches.dot(region.center.reshape(shape)) + patches.with_values(patches.values.abs()).dot(radius)
    if not isinstance(region, LpBall):
        raise TypeError(f"cannot concretize over a {type(region).__name__}")
    norms = torch.linalg.vector_norm(patches.values, ord=dual_norm(region.norm), dim=WINDOW)
    upper = patches.dot(region.center.reshape(shape)) + region.radius.reshape(-1, 1) * norms.flatten(1)
    if region.domain is not None:
        upper = torch.minimum(upper, _patch_upper(region.domain, input_shape, patches))
    return upper


def _entries(coefficients) -> int:
    return (coefficients.values if isinstance(coefficients, Patches) else coefficients).numel()


def _zeros(walk: Walk, rows: int) -> torch.Tensor:
    like = walk.bounds[walk.graph.input_name].lower
    return like.new_zeros(walk.region.batch, rows)


def _relaxation(walk: Walk, node: Node):
    """The node's relaxation on its input bounds, made once per walk (the dense engine's rule)."""
    return node_relaxation(node, walk.bounds, walk.mode, None, walk.relaxations)
