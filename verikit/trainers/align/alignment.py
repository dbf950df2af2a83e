"""The alignment score of Boopathy & Fiete (seed-papers.md 6.2, the reference's alignment_kmnist.py): how
closely a backprop-trained conv's weight change dW matches the infinite-width prediction.

The prediction is a twin that starts from the same weights and takes, at every step, the Align-zero update
for the backprop network's own error (N0's gradient for that error). For each conv, Gaussian probes n
shaped like its input are mapped to v = dW^T dW n / C_out (the conv, then its adjoint), each normalised by
its mean |v|; score = sum <v, v_ref> / sqrt(sum <v, v> sum <v_ref, v_ref>) over the probe batches. The
control replaces dW by shuffle(W_final) - W_init, as the reference does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from verikit.trainers.align.forward import Layout, forward, output_gradient
from verikit.trainers.align.network import NTKConv2d
from verikit.trainers.align.plugin import train_network
from verikit.trainers.align.rules import Rule, State, backprop, frozen, frozen_copy
from verikit.trainers.base import Progress, TrainOptions
from verikit.trainers.data import Dataset


def backprop_with_twin(layout: Layout, params: list[torch.Tensor], state: State, x: torch.Tensor,
                       target: torch.Tensor):
    """Backprop's update; the twin's gradient sum grows by N0's gradient for the same error."""
    updates, output = backprop(layout, params, state, x, target)
    initial = frozen(state)
    twin = torch.autograd.grad(forward(layout, initial, x).output, initial, output_gradient(output, target))
    for total, gradient in zip(state["twin"], twin):
        total.add_(gradient)
    return updates, output


def prepare_twin(layout: Layout, params: list[torch.Tensor], shape: tuple[int, ...], generator) -> State:
    return {**frozen_copy(layout, params, shape, generator), "twin": [torch.zeros_like(p) for p in params]}


TWIN = Rule("backprop-with-twin", "backprop, with an Align-zero twin driven by its error", backprop_with_twin,
            prepare_twin)


def backprojection(conv: NTKConv2d, change: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """dW^T dW n / C_out with the conv's stride and padding, divided by its mean absolute value."""
    noise = noise.detach().requires_grad_()
    image = F.conv2d(noise, change, None, conv.stride, conv.padding)
    value, = torch.autograd.grad(image, noise, image.detach())
    value = value / change.shape[0]
    return value / value.abs().mean()


def score(conv: NTKConv2d, change: torch.Tensor, reference: torch.Tensor, input_shape: tuple[int, ...],
          probes: int, batch: int, generator: torch.Generator) -> float:
    """The normalised inner product of the two backprojections over `probes` batches of noise."""
    sums = torch.zeros(3, dtype=torch.float64)
    for _ in range(probes):
        noise = torch.randn(batch, *input_shape, generator=generator, dtype=change.dtype)
        v, r = backprojection(conv, change, noise), backprojection(conv, reference, noise)
        sums += torch.stack([(v * r).sum(), (v * v).sum(), (r * r).sum()]).double() / batch
    return float(sums[0] / (sums[1] * sums[2]).sqrt())


@dataclass
class Alignment:
    """Per conv: the backprop network's score against the twin and the shuffled-weights control's."""

    scores: list[float]
    controls: list[float]


def shuffled(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The entries of `weight` in a random order."""
    flat = weight.reshape(-1)
    return flat[torch.randperm(flat.numel(), generator=generator)].reshape(weight.shape)


def measure_alignment(model: nn.Module, data: Dataset, options: TrainOptions, probes: int = 20,
                      batch: int = 20, progress: Progress | None = None) -> Alignment:
    """Train `model` (an NTK conv net) by backprop with its twin, then score every conv."""
    state = train_network(TWIN, model, data, options, progress or Progress())
    layout = Layout.of(model)
    params = [p.detach() for p in model.parameters()]
    sample = data.x_train[:2].to(params[0].dtype)
    with torch.no_grad():
        inputs = [sample] + forward(layout, params, sample).normalised
    generator = torch.Generator().manual_seed(options.seed)
    scores, controls = [], []
    for index, conv in enumerate(layout.convs):
        initial, final = state["frozen"][2 * index], params[2 * index]
        reference = -options.lr * state["twin"][2 * index]
        shape = tuple(inputs[index].shape[1:])
        scores.append(score(conv, final - initial, reference, shape, probes, batch, generator))
        control = shuffled(final, generator) - initial
        controls.append(score(conv, control, reference, shape, probes, batch, generator))
    return Alignment(scores, controls)
