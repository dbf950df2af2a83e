"""The recurrent version (seed-papers.md 6.4): a vanilla ReLU RNN on the Add task, trained by BPTT,
Align-ada, Align-zero or its readout only, with plain SGD.

h_t = relu(w_in x_t + W h_{t-1} / sqrt(n) + b), y_t = w_out . h_t / sqrt(n) + b_out, a trainable initial
state h_0 (zeros; one vector shared by every sequence), weights N(0, 1), biases zero. The loss is the sum
over t of the batch-mean squared error. Align-ada hands N0's whole backward signal at each state (through
its output and its next step) to the live state, whose own ReLU derivative and stop-gradient'd input make
the update; the reference code hands over only the next-step part, which would break the step-0 identity
with BPTT. Readout-only trains w_out and b_out (the reference also trains h_0 there).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from verikit.trainers.align.rules import Gradients, State, frozen, frozen_copy, no_state
from verikit.trainers.align.sgd import run_sgd
from verikit.trainers.base import Progress


@dataclass
class AddTask:
    """Binary sequences x and targets y_t = 0.5 + 0.5 x_{t-2} - 0.25 x_{t-5} (terms before t = 0 are 0)."""

    x_train: torch.Tensor  # [N, T]
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def chance_loss(self) -> float:
        """The test loss of always answering 0.5 (the reference's 'random chance')."""
        return float(((self.y_test - 0.5) ** 2).mean(0).sum())


def add_task(length: int = 100, train: int = 300, test: int = 100, seed: int = 99) -> AddTask:
    """The Add task of the reference: `train` + `test` sequences of `length` fair coin flips."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((train + test, length), 0.5), generator=generator)

    def delayed(steps: int) -> torch.Tensor:
        return torch.cat([torch.zeros(len(x), steps), x[:, :-steps]], 1)

    y = 0.5 + 0.5 * delayed(2) - 0.25 * delayed(5)
    return AddTask(x[:train], y[:train], x[train:], y[train:])


class ReluRNN(nn.Module):
    """The reference's RNN in NTK parameterisation (module docstring)."""

    def __init__(self, width: int):
        super().__init__()
        self.input_weight = nn.Parameter(torch.randn(width))
        self.recurrent_weight = nn.Parameter(torch.randn(width, width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.readout_weight = nn.Parameter(torch.randn(width))
        self.readout_bias = nn.Parameter(torch.zeros(1))
        self.initial_state = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unroll(list(self.parameters()), x)[1]


def unroll(params: list[torch.Tensor], x: torch.Tensor, detach_inputs: bool = False
           ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every state h_0..h_T and the outputs [N, T] of the RNN with `params` (ReluRNN's order) on x [N, T];
    `detach_inputs` stops the gradient at each step's recurrent input and at the readout's input."""
    input_weight, recurrent, bias, readout, readout_bias, initial = params
    scale = recurrent.shape[0] ** -0.5
    states = [initial.expand(len(x), -1)]
    outputs = []
    for t in range(x.shape[1]):
        previous = states[-1].detach() if detach_inputs else states[-1]
        state = torch.relu(x[:, t:t + 1] * input_weight + previous @ recurrent.T * scale + bias)
        states.append(state)
        outputs.append((state.detach() if detach_inputs else state) @ readout * scale + readout_bias)
    return states, torch.stack(outputs, 1)


def sequence_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The sum over time steps of the batch-mean squared error."""
    return ((output - target) ** 2).mean(0).sum()


def backprop_through_time(params: list[torch.Tensor], state: State, x: torch.Tensor,
                          target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    _, output = unroll(params, x)
    return list(torch.autograd.grad(output, params, 2 * (output.detach() - target) / len(x))), output.detach()


def align_zero(params: list[torch.Tensor], state: State, x: torch.Tensor,
               target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    with torch.no_grad():
        output = unroll(params, x)[1]
    initial = frozen(state)
    error = 2 * (output - target) / len(x)
    return list(torch.autograd.grad(unroll(initial, x)[1], initial, error)), output


def align_ada(params: list[torch.Tensor], state: State, x: torch.Tensor,
              target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    states, output = unroll(params, x, detach_inputs=True)
    error = 2 * (output.detach() - target) / len(x)
    frozen_states, frozen_output = unroll(frozen(state), x)
    signals = torch.autograd.grad(frozen_output, frozen_states, error)
    return list(torch.autograd.grad([*states, output], params, [*signals, error])), output.detach()


def readout_only(params: list[torch.Tensor], state: State, x: torch.Tensor,
                 target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    _, output = unroll(params, x, detach_inputs=True)
    error = 2 * (output.detach() - target) / len(x)
    return list(torch.autograd.grad(output, params, error, allow_unused=True)), output.detach()


RECURRENT_RULES = {"backprop": (backprop_through_time, no_state), "align-zero": (align_zero, frozen_copy),
                   "align-ada": (align_ada, frozen_copy), "last-layer": (readout_only, no_state)}


@dataclass
class RecurrentOptions:
    """The reference's Add-task training: plain SGD at lr 1e-3, batch 50, 200 epochs."""

    epochs: int = 200
    batch_size: int = 50
    lr: float = 1e-3
    seed: int = 0  # the batch order (the weights come from the model)
    checkpoint: str | None = None
    resume: bool = False


def train_recurrent(rule: str, model: ReluRNN, task: AddTask, options: RecurrentOptions | None = None,
                    progress: Progress | None = None) -> dict[str, float]:
    """Train `model` in place with `rule` (RECURRENT_RULES); returns the best and final train / test losses."""
    options = options or RecurrentOptions()
    update, prepare = RECURRENT_RULES[rule]
    params = list(model.parameters())
    state = prepare(None, params, (), None)
    best = {"best_train_loss": float("inf"), "best_test_loss": float("inf")}

    def step(indices: torch.Tensor):
        x, target = task.x_train[indices], task.y_train[indices]
        updates, output = update(params, state, x, target)
        return updates, {"loss": float(sequence_loss(output, target))}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        losses = {"train_loss": float(sequence_loss(model(task.x_train), task.y_train)),
                  "test_loss": float(sequence_loss(model(task.x_test), task.y_test))}
        for split in ("train", "test"):
            best[f"best_{split}_loss"] = min(best[f"best_{split}_loss"], losses[f"{split}_loss"])
        return losses

    run_sgd(model, step, len(task.x_train), options, progress or Progress(), evaluate, state)
    return {**best, **evaluate()}
