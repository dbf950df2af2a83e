"""The NTK-parameterised conv net of the Align experiments (seed-papers.md 6.1 and 7.6), as an nn.Sequential
that `verikit train` builds, the Align rules train and `verikit.trainers.export` writes to ONNX.

Each conv has N(0, 1) weights, its output divided by sqrt(k * k * C_in), zero biases and SAME output sizes
from a symmetric padding of k // 2 (TF's SAME pads a stride-2 conv on an even size only after, so its windows
sit one pixel further on; torch's conv cannot pad unevenly and an explicit Pad would not export statically).
Batch norm follows every conv without affine parameters (eps 1e-6) and, as in the reference code, with
statistics per unit (channel and position) over the batch. Then ReLU; after the last block global average
pooling and a readout (a 1x1 conv, i.e. a linear map, divided by sqrt(C), plus a bias). While training,
batch norm uses the batch's statistics; in eval mode it uses population statistics that
`set_population_statistics` computes on the training set, and exports as an elementwise affine map
(ONNX Sub and Mul), which verikit verifies.
"""
from __future__ import annotations

from math import ceil

import torch
import torch.nn.functional as F
from torch import nn

from verikit.errors import VerikitError

EPSILON = 1e-6  # the reference code's batch-norm epsilon
KERNEL = 3
STRIDES = (1, 2, 2)


class NTKConv2d(nn.Module):
    """A conv in NTK parameterisation: conv(x, W) / sqrt(k * k * C_in) + b, W ~ N(0, 1), b = 0."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride, self.padding = stride, kernel // 2
        self.scale = (kernel * kernel * in_channels) ** -0.5

    def convolve(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This conv with the given weight and bias (the Align rules pass a frozen copy's or feedback's)."""
        return F.conv2d(x, weight * self.scale, bias, self.stride, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convolve(x, self.weight, self.bias)


class NTKLinear(nn.Module):
    """The readout: x W^T / sqrt(C) + b, W ~ N(0, 1), b = 0 (the reference's 1x1 conv after pooling)."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, features))
        self.bias = nn.Parameter(torch.zeros(classes))
        self.scale = features ** -0.5

    def project(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This readout with the given weight and bias."""
        return F.linear(x, weight * self.scale, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x, self.weight, self.bias)


def normalise(z: torch.Tensor) -> torch.Tensor:
    """Batch norm with the batch's statistics per unit, no affine parameters."""
    mean, variance = z.mean(0), z.var(0, unbiased=False)
    return (z - mean) * torch.rsqrt(variance + EPSILON)


class UnitBatchNorm(nn.Module):
    """Batch norm per unit: batch statistics while training, population statistics in eval mode."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("inverse_std", torch.ones(shape))
        self.register_buffer("populated", torch.zeros((), dtype=torch.bool))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.training:
            return normalise(z)
        if not bool(self.populated):
            raise VerikitError("batch norm has no population statistics yet", place="model",
                               fix="call set_population_statistics(model, x_train) before evaluating")
        return (z - self.mean) * self.inverse_std


def ntk_conv(shape: tuple[int, ...], classes: int, width: int | str = 64) -> list[nn.Module]:
    """Three NTK convs of `width` 3x3 channels, strides (1, 2, 2), SAME, each with batch norm and ReLU;
    global average pooling; the readout."""
    if not str(width).isdigit() or int(width) < 1:
        raise VerikitError(f"width {width!r} is not a positive integer", place="--arch",
                           fix="write e.g. ntk-conv:width=64")
    width = int(width)
    channels, size = shape[0], tuple(shape[1:])
    layers: list[nn.Module] = []
    for stride in STRIDES:
        conv = NTKConv2d(channels, width, KERNEL, stride)
        size = tuple(ceil(length / stride) for length in size)
        layers += [conv, UnitBatchNorm((width, *size)), nn.ReLU()]
        channels = width
    return layers + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), NTKLinear(width, classes)]


@torch.no_grad()
def set_population_statistics(model: nn.Sequential, x: torch.Tensor, batch_size: int = 500) -> None:
    """Each batch norm's mean and variance over all of `x`, layer by layer (the layers below already
    normalised with theirs), so the eval-mode net is a fixed map that can be exported and verified."""
    model.eval()
    x = x.to(next(model.parameters()).dtype)
    chunks = [x[start:start + batch_size] for start in range(0, len(x), batch_size)]  # each layer's input
    for module in model:
        if isinstance(module, UnitBatchNorm):
            inputs = torch.cat(chunks)
            module.mean.copy_(inputs.mean(0))
            module.inverse_std.copy_(torch.rsqrt(inputs.var(0, unbiased=False) + EPSILON))
            module.populated.fill_(True)
        chunks = [module(chunk) for chunk in chunks]  # one pass through the net in all


@torch.no_grad()
def batch_statistics_accuracy(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Accuracy with batch norm on each batch's own statistics, as the reference code tests (full batches
    of `batch_size`, or one batch of all when fewer; the remainder is dropped, as there)."""
    if len(y) < 2:
        return float("nan")
    batch_size = min(batch_size, len(y))
    batches = len(y) // batch_size
    was_training = model.training
    model.train()
    x = x.to(next(model.parameters()).dtype)
    correct = sum(int((model(x[i * batch_size:(i + 1) * batch_size]).argmax(1)
                       == y[i * batch_size:(i + 1) * batch_size]).sum()) for i in range(batches))
    model.train(was_training)
    return correct / (batches * batch_size)
