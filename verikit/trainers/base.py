"""The trainer contract (DESIGN.md section 2, "Trainer plugin"): a Trainer has a name, a summary, an
options dataclass with documented defaults, and `train(model, data, options, progress) -> model`.

Built-in and third-party trainers register through the `verikit_trainers` hook. Most trainers only
define `loss` (and optionally `end_epoch`); the shared loop in `verikit.trainers.loop` does the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from verikit.trainers.schedule import Schedule

if TYPE_CHECKING:
    from verikit.trainers.data import Dataset


@dataclass
class TrainOptions:
    """Options every trainer shares. eps is measured in the [0, 1] input scale (the dataset's domain)."""

    epochs: int = 100  # the reference's 100 epochs (digits: 1,300 steps of 100)
    batch_size: int = 100  # the SingleProp / IBP MNIST reference batch
    lr: float = 1e-3  # Adam's initial learning rate; divided by 10 at each of schedule.lr_drops
    seed: int = 0  # seeds the initial weights (when the trainer builds them) and the batch order
    eps: float = 0.1  # the target eps, reached at schedule.ramp_end
    kappa_end: float = 0.5  # the clean loss's weight once the ramp ends (1 during warm-up)
    schedule: Schedule = field(default_factory=Schedule)
    checkpoint: str | None = None  # a file saved after every epoch (model, optimizer, batch order's state)
    resume: bool = False  # continue from `checkpoint` when it exists


@dataclass
class Step:
    """What a loss needs to know about the current step."""

    eps: float  # the training eps now (schedule applied)
    kappa: float  # the clean loss's weight now
    fraction: float  # how far training is, 0..1
    domain: tuple[float, float]  # the inputs' value range, for clipping boxes and attacks
    target_eps: float  # the eps the schedule ramps to
    state: dict[str, Any]  # the trainer's own state across steps (saved in checkpoints)
    options: TrainOptions = field(default_factory=TrainOptions)  # the run's options (a trainer's Options)


class Progress:
    """Receives training progress; the default ignores it (the CLI shows a bar and writes a CSV)."""

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int = 0) -> None:
        """Training begins (or resumes at `first_epoch`)."""

    def step(self, metrics: dict[str, float]) -> None:
        """One optimiser step done: loss, accuracy (of the batch), eps, kappa."""

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """An epoch done (0-based), with its mean loss, accuracies, eps, kappa and seconds."""


class Trainer:
    """Base of every trainer plugin. Subclasses set `name`, `summary`, `Options` and define `loss`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = TrainOptions
    uses_eps: ClassVar[bool] = True  # its loss depends on eps (the warm-up check in the loop applies)
    architecture: ClassVar[str] = "mnist-small"  # what `verikit train` builds when --arch is not given

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: Step,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss of one batch and the clean logits (for the accuracy shown)."""
        raise NotImplementedError

    def kappa(self, scheduled: float, options: TrainOptions, state: dict[str, Any]) -> float:
        """The clean-loss weight to use: the schedule's, unless the trainer adapts it (see SingleProp)."""
        return scheduled

    def check(self, options: TrainOptions) -> None:
        """Reject options the trainer cannot use (VerikitError), before any work starts."""

    def check_model(self, model: nn.Module) -> None:
        """Reject a model the trainer cannot train (VerikitError), before any work starts."""

    def end_epoch(self, model: nn.Module, data: "Dataset", step: Step) -> None:
        """Called after every epoch (e.g. to adapt kappa on the validation split)."""

    def train(self, model: nn.Module, data: "Dataset", options: TrainOptions | None = None,
              progress: Progress | None = None) -> nn.Module:
        """Train `model` in place on `data` and return it."""
        from verikit.trainers.loop import run_training

        return run_training(self, model, data, options or self.Options(), progress or Progress())

    def __repr__(self) -> str:
        return f"<trainer {self.name}>"


def clean_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the clean logits."""
    return nn.functional.cross_entropy(logits, y)


def mixed_loss(clean: torch.Tensor, robust: torch.Tensor, kappa: float) -> torch.Tensor:
    """kappa * clean + (1 - kappa) * robust, skipping the robust term when its weight is 0."""
    return clean if kappa >= 1.0 else kappa * clean + (1.0 - kappa) * robust
