"""Average pooling (ONNX AveragePool, 1- to 3-D, with ONNX's count_include_pad semantics) and
GlobalAveragePool. Both are linear with non-negative weights, so |L| = L. MaxPool lives in maxpool.py.
"""
from __future__ import annotations

from math import prod

import numpy as np
import torch
import torch.nn.functional as F

from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import LinearRule
from verikit.layers.conv import resolve_pads, spatial_attribute, torch_pads
from verikit.lp.encode import LPModel, onnx_pads, sliding_windows

AVERAGE_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class AveragePool(LinearRule):
    """Mean over each window of the zero-padded input. With count_include_pad=0 (ONNX's default) a
    window is divided by its count of real (unpadded) elements: a constant per-position `correction`."""

    op_types = ("AveragePool",)

    def __init__(self, node: NodeInfo, kernel: tuple[int, ...], strides: tuple[int, ...],
                 pads: tuple[int, ...] | None, correction: torch.Tensor | None):
        super().__init__(node)
        self.kernel, self.strides, self.pads, self.correction = kernel, strides, pads, correction

    @classmethod
    def build(cls, node: NodeInfo) -> "AveragePool":
        if "kernel_shape" not in node.attributes:
            raise cls.reject(node, "the kernel_shape attribute is missing", "give kernel_shape")
        spatial = len(node.attributes["kernel_shape"])
        in_shape = tuple(node.input_shapes[0])
        if spatial not in AVERAGE_POOLS or len(in_shape) != spatial + 2:
            raise cls.reject(node, f"a {spatial}-D kernel on an input of shape {in_shape} is not supported",
                             "use 1-, 2- or 3-D pooling over [batch, channels, *space]")
        kernel = spatial_attribute(node, "kernel_shape", spatial, 1)
        strides = spatial_attribute(node, "strides", spatial, 1)
        if spatial_attribute(node, "dilations", spatial, 1) != (1,) * spatial:
            raise cls.reject(node, "dilated average pooling is not supported", "use dilations of 1")
        begins, ends = resolve_pads(node, in_shape[2:], kernel, strides, (1,) * spatial)
        if any(p >= k for p, k in zip(begins + ends, kernel + kernel)):
            raise cls.reject(node, f"pads {list(begins + ends)} must be smaller than the kernel {list(kernel)}",
                             "use smaller pads")
        padded = tuple(n + b + e for n, b, e in zip(in_shape[2:], begins, ends))
        expected = tuple((n - k) // s + 1 for n, k, s in zip(padded, kernel, strides))
        if expected != tuple(node.output_shape[2:]):
            raise cls.reject(node, f"output size {tuple(node.output_shape[2:])} has partial windows "
                                   f"(ceil_mode); only full windows {expected} are supported",
                             "use ceil_mode=0 or pad the input so the windows tile it")
        pads = torch_pads(begins, ends) if any(begins + ends) else None
        correction = None
        if pads is not None and not int(node.attributes.get("count_include_pad", 0)):
            ones = F.pad(torch.ones(1, 1, *in_shape[2:], dtype=torch.float32), pads)  # the weights' dtype
            correction = 1.0 / AVERAGE_POOLS[spatial](ones, kernel, strides)[0, 0]
        return cls(node, kernel, strides, pads, correction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x.reshape(-1, *x.shape[2:])
        if self.pads is not None:
            x = F.pad(x, self.pads)
        y = AVERAGE_POOLS[len(self.kernel)](x, self.kernel, self.strides)
        if self.correction is not None:
            y = y * self.correction
        return y.reshape(n, *self.output_shape)

    def absolute(self, radius: torch.Tensor) -> torch.Tensor:
        return self.forward(radius)

    def backward_patches(self, patches, relaxation=None):
        """`backward` on CNN-Cert window coefficients: a conv with fixed weights 1 / window size per
        channel (after the count_include_pad correction). None for 1-D and 3-D pooling."""
        if len(self.kernel) != 2:
            return None
        if self.correction is not None:
            patches = patches.scaled(self.correction.reshape(1, 1, 1, *self.correction.shape))
        channels = self.input_shapes[0][1]
        values = patches.values
        kernel = torch.full((channels, 1, *self.kernel), 1 / prod(self.kernel), dtype=values.dtype,
                            device=values.device)
        begins = (self.pads[2], self.pads[0]) if self.pads is not None else (0, 0)  # pads are F.pad's order
        pushed = patches.spread(kernel, self.strides, (1, 1), begins, channels, self.input_shapes[0][2:])
        return [pushed], patches.zero_bias()


    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """One row per output: the window's mean, 1 / window size (times the count_include_pad
        correction) on each real entry; padded entries are zeros and drop out."""
        spatial = len(self.kernel)
        begins, ends = onnx_pads(self.pads, spatial)
        fields = sliding_windows(inputs[0], self.kernel, self.strides, (1,) * spatial, begins, ends)
        fields = fields.reshape(*self.output_shape, -1)
        weight = np.full(self.output_shape[-spatial:], 1 / prod(self.kernel))
        if self.correction is not None:
            weight = weight * self.correction.double().numpy()
        y = model.free(self.output_shape)
        model.equal(y, np.maximum(fields, 0), np.where(fields < 0, 0.0, weight[..., None]))
        return y

class GlobalAveragePool(LinearRule):
    """The mean over all spatial dims, kept as size-1 dims: [Nb, C, *space] -> [Nb, C, 1, ...]."""

    op_types = ("GlobalAveragePool",)

    @classmethod
    def build(cls, node: NodeInfo) -> "GlobalAveragePool":
        if len(node.input_shapes[0]) < 3:
            raise cls.reject(node, f"input shape {node.input_shapes[0]} has no spatial dims",
                             "GlobalAveragePool needs [batch, channels, *space]")
        return cls(node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(3, x.dim())), keepdim=True)

    def absolute(self, radius: torch.Tensor) -> torch.Tensor:
        return self.forward(radius)

    def backward_patches(self, patches, relaxation=None):
        """`backward` on CNN-Cert window coefficients: a conv whose kernel, 1 / (H W) per channel,
        covers the whole map. None unless the input is [batch, C, H, W]."""
        shape = self.input_shapes[0]
        if len(shape) != 4:
            return None
        values = patches.values
        kernel = torch.full((shape[1], 1, *shape[2:]), 1 / prod(shape[2:]), dtype=values.dtype,
                            device=values.device)
        pushed = patches.spread(kernel, (1, 1), (1, 1), (0, 0), shape[1], shape[2:])
        return [pushed], patches.zero_bias()


    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """One row per output: the mean of its channel's map."""
        fields = inputs[0].reshape(*inputs[0].shape[:2], -1)
        y = model.free(self.output_shape)
        model.equal(y.reshape(fields.shape[:2]), fields, 1 / fields.shape[-1])
        return y

@hookimpl
def verikit_layers(register) -> None:
    register(AveragePool)
    register(GlobalAveragePool)
