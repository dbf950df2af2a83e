"""Convolution (ONNX Conv, 1-, 2- or 3-D) with a constant kernel: any pads or auto_pad, strides,
dilations and groups. `backward` is the transposed convolution, cropped back to the input's shape.

The sample and ONNX batch dims are merged for torch ([N, Nb, C, *space] -> [N*Nb, C, *space]).
"""
from __future__ import annotations

from math import ceil

import numpy as np
import torch
import torch.nn.functional as F

from verikit.bounds import Relaxation
from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import LayerRule, LinearRule
from verikit.layers.linear import as_tensor, text
from verikit.lp.encode import LPModel, sliding_windows

CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TRANSPOSED = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def spatial_attribute(node: NodeInfo, key: str, spatial: int, default: int) -> tuple[int, ...]:
    """A per-spatial-dim integer list attribute (strides, dilations, kernel_shape), checked for length."""
    values = tuple(int(v) for v in node.attributes.get(key, (default,) * spatial))
    if len(values) != spatial or min(values) < 1:
        raise LayerRule.reject(node, f"{key}={list(values)} does not fit {spatial} spatial dims",
                               f"give {spatial} positive values")
    return values


def resolve_pads(node: NodeInfo, space: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                 dilations: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(begins, ends) per spatial dim from `pads` or `auto_pad` (NOTSET, VALID, SAME_UPPER, SAME_LOWER)."""
    spatial = len(space)
    mode = text(node.attributes.get("auto_pad", "NOTSET"))
    if mode == "NOTSET":
        pads = tuple(int(p) for p in node.attributes.get("pads", (0,) * (2 * spatial)))
        if len(pads) != 2 * spatial or min(pads) < 0:
            raise LayerRule.reject(node, f"pads={list(pads)} must be {2 * spatial} non-negative values",
                                   "fix the pads attribute")
        return pads[:spatial], pads[spatial:]
    if mode == "VALID":
        return (0,) * spatial, (0,) * spatial
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise LayerRule.reject(node, f"auto_pad={mode!r} is not an ONNX value",
                               "use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    totals = [max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
              for n, k, s, d in zip(space, kernel, strides, dilations)]
    begins = tuple(t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in totals)
    return begins, tuple(t - b for t, b in zip(totals, begins))


def torch_pads(begins: tuple[int, ...], ends: tuple[int, ...]) -> tuple[int, ...]:
    """ONNX (begins, ends) per dim -> F.pad's flat (last_begin, last_end, ..., first_begin, first_end)."""
    return tuple(p for b, e in zip(reversed(begins), reversed(ends)) for p in (b, e))


class Conv(LinearRule):
    """y = conv(x, W) + b. Symmetric pads go to torch's conv; asymmetric ones pad explicitly first."""

    op_types = ("Conv",)

    def __init__(self, node: NodeInfo, weight: torch.Tensor, bias: torch.Tensor | None,
                 strides: tuple[int, ...], dilations: tuple[int, ...], begins: tuple[int, ...],
                 ends: tuple[int, ...], group: int):
        super().__init__(node)
        self.weight, self.bias = weight, bias
        self.strides, self.dilations, self.group = strides, dilations, group
        self.begins, self.ends = begins, ends  # ONNX pads per spatial dim, for engines that need them
        symmetric = begins == ends
        self.padding = begins if symmetric else (0,) * len(begins)
        self.explicit_pads = None if symmetric else torch_pads(begins, ends)
        self.output_padding = self._output_padding(begins, ends)

    @classmethod
    def build(cls, node: NodeInfo) -> "Conv":
        weight = node.constant(1)
        has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
        bias = node.constant(2) if has_bias else None
        if weight is None or (has_bias and bias is None):
            raise cls.reject(node, "the kernel and bias must be constants", "export with constant weights")
        spatial = weight.ndim - 2
        if spatial not in CONVOLUTIONS:
            raise cls.reject(node, f"{spatial}-D convolution is not supported", "use a 1-, 2- or 3-D Conv")
        in_shape = tuple(node.input_shapes[0])
        kernel = tuple(weight.shape[2:])
        if "kernel_shape" in node.attributes and spatial_attribute(node, "kernel_shape", spatial, 1) != kernel:
            raise cls.reject(node, f"kernel_shape {list(node.attributes['kernel_shape'])} differs from the "
                                   f"weight's {list(kernel)}", "fix the kernel_shape attribute")
        group = int(node.attributes.get("group", 1))
        if len(in_shape) != spatial + 2 or in_shape[1] != weight.shape[1] * group or weight.shape[0] % group:
            raise cls.reject(node, f"input {in_shape}, weight {weight.shape} and group={group} do not fit",
                             "check the exported model")
        strides = spatial_attribute(node, "strides", spatial, 1)
        dilations = spatial_attribute(node, "dilations", spatial, 1)
        begins, ends = resolve_pads(node, in_shape[2:], kernel, strides, dilations)
        bias_tensor = None if bias is None else as_tensor(np.asarray(bias).reshape(-1))
        return cls(node, as_tensor(weight), bias_tensor, strides, dilations, begins, ends, group)

    def _output_padding(self, begins: tuple[int, ...], ends: tuple[int, ...]) -> tuple[int, ...]:
        """Extra size the transposed conv needs to reach the (padded) input's spatial size."""
        space = self.input_shapes[0][2:]
        if self.explicit_pads is not None:
            space = tuple(n + b + e for n, b, e in zip(space, begins, ends))
        kernel = self.weight.shape[2:]
        return tuple(n + 2 * p - ((m - 1) * s + (k - 1) * d + 1)
                     for n, p, m, s, k, d in zip(space, self.padding, self.output_shape[2:], self.strides,
                                                 kernel, self.dilations))

    def _convolve(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        x = x.reshape(-1, *x.shape[2:])
        if self.explicit_pads is not None:
            x = F.pad(x, self.explicit_pads)
        y = CONVOLUTIONS[len(self.strides)](x, weight, bias, self.strides, self.padding, self.dilations,
                                            self.group)
        return y.reshape(n, *self.output_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._convolve(x, self.weight, self.bias)

    def absolute(self, radius: torch.Tensor) -> torch.Tensor:
        return self._convolve(radius, self.weight.abs(), None)

    def backward(self, coefficients: torch.Tensor, relaxation: Relaxation | None = None,
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """A . (conv(x) + b) = conv_transpose(A) . x + sum over positions of A * b."""
        spatial = len(self.strides)
        lead = coefficients.shape[: coefficients.dim() - len(self.output_shape)]
        flat = coefficients.reshape(-1, *self.output_shape[1:])
        pushed = TRANSPOSED[spatial](flat, self.weight, None, self.strides, self.padding, self.output_padding,
                                     self.group, self.dilations)
        if self.explicit_pads is not None:
            pushed = F.pad(pushed, tuple(-p for p in self.explicit_pads))
        pushed = pushed.reshape(*lead, *self.input_shapes[0])
        if self.bias is None:
            return [pushed], coefficients.new_zeros(lead)
        per_channel = coefficients.flatten(start_dim=coefficients.dim() - spatial).sum(-1)
        bias = (per_channel * self.bias).flatten(start_dim=len(lead)).sum(-1)
        return [pushed], bias

    def backward_patches(self, patches, relaxation: Relaxation | None = None):
        """`backward` on CNN-Cert window coefficients (verikit.propagate.patches): every window grows by
        a transposed convolution with the kernel. None (use dense coefficients) for 1-D and 3-D convs."""
        if len(self.strides) != 2:
            return None
        pushed = patches.spread(self.weight, self.strides, self.dilations, self.begins, self.group,
                                self.input_shapes[0][2:])
        bias = patches.zero_bias() if self.bias is None else patches.dot(self.bias.reshape(1, 1, -1, 1, 1))
        return [pushed], bias

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """One row per output: y = b + sum over its receptive field (sliding windows of the input's
        indices, padding dropped) of kernel weight * x."""
        batch, channels = inputs[0].shape[:2]
        groups, spatial = self.group, len(self.strides)
        fields = sliding_windows(inputs[0], self.weight.shape[2:], self.strides, self.dilations, self.begins, self.ends)
        out = fields.shape[2:2 + spatial]
        fields = fields.reshape(batch, groups, channels // groups, *out, -1)  # [Nb, G, Cg, *out, K]
        fields = np.moveaxis(fields, 2, -2).reshape(batch, groups, 1, *out, -1)  # [Nb, G, 1, *out, Cg*K]
        weight = self.weight.double().numpy().reshape(1, groups, -1, *(1,) * spatial, fields.shape[-1])
        columns, coefficients = np.broadcast_arrays(fields, weight)  # [Nb, G, Og, *out, Cg*K]
        columns, coefficients = (a.reshape(*self.output_shape, -1) for a in (columns, coefficients))
        bias = 0.0 if self.bias is None else self.bias.double().numpy().reshape(-1, *(1,) * spatial)
        y = model.free(self.output_shape)
        model.equal(y, np.maximum(columns, 0), np.where(columns < 0, 0.0, coefficients), bias)
        return y


@hookimpl
def verikit_layers(register) -> None:
    register(Conv)
