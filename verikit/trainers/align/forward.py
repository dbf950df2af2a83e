"""The NTK conv net's forward pass as a function of its parameters, with the stop-gradient and feedback
routes the learning rules need (seed-papers.md 6.3): always batch statistics, as in training."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from verikit.errors import VerikitError
from verikit.trainers.align.network import NTKConv2d, NTKLinear, UnitBatchNorm, normalise


@dataclass
class Layout:
    """The parts of an NTK conv net (`network.ntk_conv`): its convs in order and its readout."""

    convs: list[NTKConv2d]
    readout: NTKLinear

    @classmethod
    def of(cls, model: nn.Module) -> "Layout":
        """The layout of `model`, which must be (NTKConv2d, UnitBatchNorm, ReLU) blocks, pooling, readout."""
        modules = list(model.children()) if isinstance(model, nn.Sequential) else []
        blocks, head = modules[:-3], [type(module) for module in modules[-3:]]
        pattern = [(NTKConv2d, UnitBatchNorm, nn.ReLU)] * (len(blocks) // 3)
        if (not blocks or len(blocks) % 3 or head != [nn.AdaptiveAvgPool2d, nn.Flatten, NTKLinear]
                or [tuple(type(m) for m in blocks[i:i + 3]) for i in range(0, len(blocks), 3)] != pattern):
            raise VerikitError("the Align rules train the NTK conv net only", place="--arch",
                               fix="train with --arch ntk-conv (or ntk-conv:width=W)")
        return cls(blocks[0::3], modules[-1])


@dataclass
class Trace:
    """One forward pass: each block's batch-norm output, the pooled activity, the output."""

    normalised: list[torch.Tensor]
    pooled: torch.Tensor
    output: torch.Tensor


def gradient_only(value: torch.Tensor) -> torch.Tensor:
    """Zero in value, but carries `value`'s gradient (the reference's v - stop_gradient(v))."""
    return value - value.detach()


def forward(layout: Layout, params: list[torch.Tensor], x: torch.Tensor, detach_inputs: bool = False,
            feedback: list[torch.Tensor] | None = None) -> Trace:
    """The net with `params` (the model's parameter order: each conv's weight and bias, then the
    readout's). `detach_inputs` stops the gradient at every layer's input; `feedback` (one weight per
    conv, then the readout's) carries the gradient down through those weights instead of the forward ones."""
    detach = detach_inputs or feedback is not None
    normalised, h = [], x
    for index, conv in enumerate(layout.convs):
        a = h if index == 0 else torch.relu(h)
        z = conv.convolve(a.detach() if detach else a, params[2 * index], params[2 * index + 1])
        if feedback is not None and a.requires_grad:
            z = z + gradient_only(conv.convolve(a, feedback[index], None))
        h = normalise(z)
        normalised.append(h)
    pooled = F.adaptive_avg_pool2d(torch.relu(h), 1).flatten(1)
    output = layout.readout.project(pooled.detach() if detach else pooled, params[-2], params[-1])
    if feedback is not None:
        output = output + gradient_only(layout.readout.project(pooled, feedback[-1], None))
    return Trace(normalised, pooled, output)


def targets(labels: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """The reference's regression targets: one-hot minus 0.1."""
    return F.one_hot(labels, classes).to(dtype) - 0.1


def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss: the mean over the batch and all outputs of (f - y)^2, without a 1/2."""
    return ((output - target) ** 2).mean()


def output_gradient(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d loss / d output for `squared_error`: the error every rule sends backward."""
    return 2 * (output.detach() - target) / output.numel()
