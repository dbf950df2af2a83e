"""Ops that only move, copy or pad values: Reshape/Flatten/Squeeze/Unsqueeze, Transpose,
Identity/Dropout, Concat (constant parts allowed), Slice and Pad (constant mode).

All are linear with 0/1 weights, so the base class's interval (|L| = L) and autograd `backward` are
exact; Concat's constant parts and Pad's fill value are the offset. Shapes are static: each rule
checks that its own reading of the attributes gives the output shape that shape inference gave.
"""
from __future__ import annotations

from math import prod

import numpy as np
import torch
import torch.nn.functional as F

from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import LayerRule, LinearRule
from verikit.layers.conv import torch_pads
from verikit.layers.linear import as_tensor, text
from verikit.lp.encode import LPModel, moved_indices


def int_list(node: NodeInfo, key: str, index: int) -> list[int] | None:
    """An integer list given as attribute `key` (older opsets) or as constant input `index` (newer)."""
    if key in node.attributes:
        return [int(v) for v in np.ravel(node.attributes[key])]
    if index < len(node.inputs) and node.inputs[index]:
        value = node.constant(index)
        if value is None:
            raise LayerRule.reject(node, f"input {index} ({key}) is computed from the network input",
                                   f"make {key} a constant (export with static shapes)")
        return [int(v) for v in np.ravel(value)]
    return None


def check_shape(node: NodeInfo, shape: tuple[int, ...]) -> None:
    """Reject when the op's own reading of its attributes disagrees with shape inference."""
    if tuple(shape) != tuple(node.output_shape):
        raise LayerRule.reject(node, f"the attributes give output shape {tuple(shape)} but shape inference "
                                     f"gave {tuple(node.output_shape)}", "check the exported model")


def reshape_target(node: NodeInfo, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of Reshape, Flatten, Squeeze or Unsqueeze on an input of `shape`."""
    rank, op = len(shape), node.op_type
    if op == "Flatten":
        axis = int(node.attributes.get("axis", 1))
        axis = axis + rank if axis < 0 else axis
        return prod(shape[:axis]), prod(shape[axis:])
    if op == "Squeeze":
        axes = int_list(node, "axes", 1)
        axes = {a % rank for a in axes} if axes is not None else {i for i, n in enumerate(shape) if n == 1}
        if any(shape[a] != 1 for a in axes):
            raise LayerRule.reject(node, f"cannot squeeze dims {sorted(axes)} of shape {shape}",
                                   "squeeze only size-1 dims")
        return tuple(n for i, n in enumerate(shape) if i not in axes)
    if op == "Unsqueeze":
        axes = int_list(node, "axes", 1)
        if axes is None:
            raise LayerRule.reject(node, "the axes are missing", "give the axes to insert")
        out_rank = rank + len(axes)
        inserted, rest = {a % out_rank for a in axes}, iter(shape)
        return tuple(1 if i in inserted else next(rest) for i in range(out_rank))
    target = int_list(node, "shape", 1)
    if target is None:
        raise LayerRule.reject(node, "the target shape is missing", "give the shape input")
    if not int(node.attributes.get("allowzero", 0)):
        target = [shape[i] if n == 0 else n for i, n in enumerate(target)]
    if -1 in target:
        known = prod(n for n in target if n != -1)
        target[target.index(-1)] = prod(shape) // known if known else 0
    return tuple(target)


class Reshape(LinearRule):
    """Reshape, Flatten, Squeeze and Unsqueeze: a reshape to [N, *output_shape]."""

    mixes = False

    op_types = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")

    @classmethod
    def build(cls, node: NodeInfo) -> "Reshape":
        in_shape = tuple(node.input_shapes[0])
        target = reshape_target(node, in_shape)
        if prod(target) != prod(in_shape):
            raise cls.reject(node, f"cannot reshape {in_shape} to {target}", "check the target shape")
        check_shape(node, target)
        return cls(node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.output_shape)

    def backward(self, coefficients: torch.Tensor, relaxation=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Coefficients move back with the entries: the same reshape, inverted."""
        lead = coefficients.shape[: coefficients.dim() - len(self.output_shape)]
        return [coefficients.reshape(*lead, *self.input_shapes[0])], coefficients.new_zeros(lead)

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """No rows: the output's variables are the input's, moved."""
        return moved_indices(self.forward, inputs[0])


class Transpose(LinearRule):
    """A permutation of the ONNX dims (default: reversed); the sample dim stays first."""

    mixes = False

    op_types = ("Transpose",)

    def __init__(self, node: NodeInfo, perm: tuple[int, ...]):
        super().__init__(node)
        self.perm = perm

    @classmethod
    def build(cls, node: NodeInfo) -> "Transpose":
        rank = len(node.input_shapes[0])
        perm = tuple(int(p) for p in node.attributes.get("perm", range(rank - 1, -1, -1)))
        if sorted(perm) != list(range(rank)):
            raise cls.reject(node, f"perm={list(perm)} is not a permutation of {rank} dims", "fix perm")
        check_shape(node, tuple(node.input_shapes[0][p] for p in perm))
        return cls(node, perm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *(p + 1 for p in self.perm))

    def backward(self, coefficients: torch.Tensor, relaxation=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The inverse permutation on the value dims (after the [B, K] lead)."""
        lead = coefficients.dim() - len(self.perm)
        inverse = [self.perm.index(axis) for axis in range(len(self.perm))]
        pushed = coefficients.permute(*range(lead), *(lead + i for i in inverse))
        return [pushed], coefficients.new_zeros(coefficients.shape[:lead])

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """No rows: the output's variables are the input's, moved."""
        return moved_indices(self.forward, inputs[0])


class Identity(LinearRule):
    """Identity, and Dropout at inference (a training_mode input must be a constant false)."""

    mixes = False

    op_types = ("Identity", "Dropout")

    @classmethod
    def build(cls, node: NodeInfo) -> "Identity":
        if node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2]:
            training = node.constant(2)
            if training is None or bool(np.ravel(training)[0]):
                raise cls.reject(node, "Dropout in training mode is random, not a function",
                                 "export the model in eval mode")
        return cls(node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def backward(self, coefficients: torch.Tensor, relaxation=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        lead = coefficients.shape[: coefficients.dim() - len(self.output_shape)]
        return [coefficients], coefficients.new_zeros(lead)

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """No rows: the output's variables are the input's, moved."""
        return moved_indices(self.forward, inputs[0])

    def backward_patches(self, patches, relaxation=None):
        """`backward` on CNN-Cert window coefficients: unchanged."""
        return [patches], patches.zero_bias()


class Concat(LinearRule):
    """Concatenation along `axis`; constant inputs are fixed parts (`pieces` holds them in order, with
    None where the next computed input goes)."""

    mixes = False

    op_types = ("Concat",)

    def __init__(self, node: NodeInfo, pieces: list[torch.Tensor | None], axis: int):
        super().__init__(node)
        self.pieces, self.axis = pieces, axis

    @classmethod
    def build(cls, node: NodeInfo) -> "Concat":
        rank = len(node.output_shape)
        if "axis" not in node.attributes:
            raise cls.reject(node, "the axis attribute is missing", "give axis")
        axis = int(node.attributes["axis"]) % rank
        pieces = [None if node.constants.get(name) is None else as_tensor(node.constants[name])
                  for name in node.inputs if name]
        return cls(node, pieces, axis)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        computed = iter(inputs)
        n = inputs[0].shape[0]
        parts = [next(computed) if p is None else p.expand(n, *p.shape) for p in self.pieces]
        return torch.cat(parts, dim=self.axis + 1)

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """No rows: the inputs' variables side by side, constant parts as fixed variables."""
        computed = iter(inputs)
        parts = [next(computed) if p is None else model.variables(p.double().numpy(), p.double().numpy())
                 for p in self.pieces]
        return np.concatenate(parts, axis=self.axis)

    def to(self, dtype: torch.dtype, device: str | torch.device = "cpu") -> "Concat":
        clone = super().to(dtype, device)
        clone.pieces = [None if p is None else p.to(dtype=dtype, device=device) for p in self.pieces]
        return clone


def slice_indices(dim: int, start: int, end: int, step: int) -> range:
    """ONNX Slice's clamping of start and end on a dim of size `dim`, as a range of indices."""
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), dim), min(max(end, 0), dim), step)
    return range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step)


class Slice(LinearRule):
    """Constant starts/ends/axes/steps (inputs from opset 10, attributes before); negative steps pick
    indices in reverse with index_select. `cuts` holds (tensor dim, slice or index list)."""

    mixes = False

    op_types = ("Slice",)

    def __init__(self, node: NodeInfo, cuts: list[tuple[int, slice | list[int]]]):
        super().__init__(node)
        self.cuts = cuts

    @classmethod
    def build(cls, node: NodeInfo) -> "Slice":
        shape = list(node.input_shapes[0])
        starts, ends = int_list(node, "starts", 1), int_list(node, "ends", 2)
        if starts is None or ends is None or len(starts) != len(ends):
            raise cls.reject(node, "starts and ends must be given, with equal lengths", "fix the Slice")
        axes = int_list(node, "axes", 3) or list(range(len(starts)))
        steps = int_list(node, "steps", 4) or [1] * len(starts)
        if 0 in steps or len(axes) != len(starts) or len(steps) != len(starts):
            raise cls.reject(node, f"axes {axes} and steps {steps} must match starts and be nonzero",
                             "fix the Slice")
        cuts = []
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis %= len(shape)
            indices = slice_indices(shape[axis], start, end, step)
            shape[axis] = len(indices)
            cut = slice(indices.start, indices.start + len(indices) * step, step) if step > 0 else list(indices)
            cuts.append((axis + 1, cut))
        check_shape(node, tuple(shape))
        return cls(node, cuts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dim, cut in self.cuts:
            if isinstance(cut, slice):
                x = x[(slice(None),) * dim + (cut,)]
            else:
                x = x.index_select(dim, torch.tensor(cut, dtype=torch.long, device=x.device))
        return x

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """No rows: the output's variables are the input's, moved."""
        return moved_indices(self.forward, inputs[0])


class Pad(LinearRule):
    """Constant-mode padding (pads may be negative: cropping); a nonzero fill value is the offset.
    Pads and value are attributes before opset 11 and constant inputs from opset 11."""

    mixes = False

    op_types = ("Pad",)

    def __init__(self, node: NodeInfo, pads: tuple[int, ...], value: float):
        super().__init__(node)
        self.pads, self.value = pads, value

    @classmethod
    def build(cls, node: NodeInfo) -> "Pad":
        mode = text(node.attributes.get("mode", "constant"))
        if mode != "constant":
            raise cls.reject(node, f"mode={mode!r} is not supported", "use constant padding")
        shape = tuple(node.input_shapes[0])
        pads = int_list(node, "pads", 1) or int_list(node, "paddings", 1)
        axes = int_list(node, "axes", 3) if len(node.inputs) > 3 else None
        axes = [a % len(shape) for a in axes] if axes is not None else list(range(len(shape)))
        if pads is None or len(pads) != 2 * len(axes):
            raise cls.reject(node, f"pads {pads} must hold a begin and an end for each of {len(axes)} axes",
                             "fix the pads")
        begins, ends = [0] * len(shape), [0] * len(shape)
        for i, axis in enumerate(axes):
            begins[axis], ends[axis] = pads[i], pads[i + len(axes)]
        check_shape(node, tuple(n + b + e for n, b, e in zip(shape, begins, ends)))
        return cls(node, torch_pads(tuple(begins), tuple(ends)), cls._fill_value(node))

    @classmethod
    def _fill_value(cls, node: NodeInfo) -> float:
        if "value" in node.attributes:
            return float(node.attributes["value"])
        if len(node.inputs) > 2 and node.inputs[2]:
            value = node.constant(2)
            if value is None:
                raise cls.reject(node, "a computed constant_value is not supported", "make it a constant")
            return float(np.ravel(value)[0]) if np.size(value) else 0.0
        return 0.0

    def _pad(self, x: torch.Tensor, value: float) -> torch.Tensor:
        return F.pad(x, self.pads, value=value) if any(self.pads) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pad(x, self.value)

    def absolute(self, radius: torch.Tensor) -> torch.Tensor:
        return self._pad(radius, 0.0)

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """No rows: the input's variables moved into place, padding one variable fixed to the fill value."""
        moved = moved_indices(lambda x: self._pad(x, -1.0), inputs[0])
        moved[moved < 0] = model.constant(self.value)
        return moved


@hookimpl
def verikit_layers(register) -> None:
    for rule in (Reshape, Transpose, Identity, Concat, Slice, Pad):
        register(rule)
