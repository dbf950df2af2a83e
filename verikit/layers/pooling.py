"""Average pooling (ONNX AveragePool, 1- to 3-D, with ONNX's count_include_pad semantics) and
GlobalAveragePool. Both are linear with non-negative weights, so |L| = L. MaxPool lives in maxpool.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import LinearRule
from verikit.layers.conv import resolve_pads, spatial_attribute, torch_pads

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
            ones = F.pad(torch.ones(1, 1, *in_shape[2:]), pads)
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


@hookimpl
def verikit_layers(register) -> None:
    register(AveragePool)
    register(GlobalAveragePool)
