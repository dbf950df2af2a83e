"""The Align trainers as plugins (`align-zero`, `align-ada`, `align-prop`, `backprop`, `fa`, `dfa`,
`last-layer`), registered through the `verikit_trainers` hook like every built-in.

They train the NTK conv net (`--arch ntk-conv[:width=W]`) on the reference's squared error to one-hot - 0.1
with plain SGD at a constant rate, so they override `train` rather than use the shared Adam loop.
`backprop` is its own trainer, not an alias of `standard`: `standard` minimises cross-entropy with Adam,
and the comparison needs every rule on the same loss and optimiser. After training, batch norm's
population statistics are computed on the training set, so the model in eval mode (the one exported and
verified) is a fixed map; `batch_statistics_accuracy` gives the reference's batch-statistics figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from verikit.errors import VerikitError
from verikit.hookspecs import hookimpl
from verikit.trainers.align.forward import Layout, squared_error, targets
from verikit.trainers.align.network import batch_statistics_accuracy, set_population_statistics
from verikit.trainers.align.rules import RULES, Rule, State
from verikit.trainers.align.sgd import run_sgd
from verikit.trainers.base import Progress, TrainOptions, Trainer
from verikit.trainers.data import Dataset


@dataclass
class AlignOptions(TrainOptions):
    """Plain SGD at the constant rate `lr` (the reference's 1, 2 or 5 assume the loss without a 1/2),
    batch 100 (at most the training set). eps, kappa_end and the schedule do not apply."""

    lr: float = 1.0


class AlignTrainer(Trainer):
    """A trainer that applies one learning rule of `rules.RULES`."""

    Options = AlignOptions
    architecture = "ntk-conv"

    def __init__(self, rule: Rule):
        self.rule, self.name, self.summary = rule, rule.name, rule.summary

    def check_model(self, model: nn.Module) -> None:
        Layout.of(model)  # an NTK conv net (ntk-conv), or one clear error naming it

    def check(self, options: TrainOptions) -> None:
        if options.batch_size < 2:
            raise VerikitError(f"batch_size {options.batch_size} leaves batch norm no statistics",
                               place="batch_size", fix="use a batch size of at least 2 (the reference: 100)")

    def train(self, model: nn.Module, data: Dataset, options: TrainOptions | None = None,
              progress: Progress | None = None) -> nn.Module:
        options = options or AlignOptions()
        self.check(options)
        train_network(self.rule, model, data, options, progress or Progress())
        return model


def train_network(rule: Rule, model: nn.Module, data: Dataset, options: TrainOptions,
                  progress: Progress) -> State:
    """Train the NTK conv net `model` in place with `rule`, then set its population statistics;
    returns the rule's state (the frozen copy, feedback weights)."""
    layout = Layout.of(model)
    params = list(model.parameters())
    dtype = params[0].dtype
    generator = torch.Generator().manual_seed(options.seed + 1)  # feedback draws, apart from the batch order
    state = rule.prepare(layout, params, data.input_shape, generator)
    x_train, y_train = data.x_train.to(dtype), data.y_train
    batch = min(options.batch_size, len(y_train))

    def step(indices: torch.Tensor):
        x, labels = x_train[indices], y_train[indices]
        target = targets(labels, data.classes, dtype)
        updates, output = rule.update(layout, params, state, x, target)
        return updates, {"loss": float(squared_error(output, target)),
                         "accuracy": float((output.argmax(1) == labels).float().mean()), "eps": 0.0, "kappa": 1.0}

    def evaluate() -> dict[str, float]:
        return {"validation_accuracy": batch_statistics_accuracy(model, data.x_val, data.y_val, batch)}

    run_sgd(model, step, len(y_train), options, progress, evaluate, state)
    set_population_statistics(model, data.x_train)
    return state


@hookimpl
def verikit_trainers(register) -> None:
    for rule in RULES.values():
        register(AlignTrainer(rule))
