"""The training loop every built-in trainer shares: Adam, the eps / kappa / lr schedule by fraction of
training, seeded batch order, a checkpoint after every epoch, and resuming from one."""
from __future__ import annotations

import os
import time
import warnings
from math import ceil
from pathlib import Path

import torch
from torch import nn

from verikit.errors import VerikitError
from verikit.trainers.base import Progress, Step, TrainOptions, Trainer
from verikit.trainers.data import Dataset

# Robust losses switched on before the clean net has learned drive it to constant logits (every ReLU
# dead, chance accuracy). On digits (13 steps an epoch) 19 warm-up steps collapsed SingleProp at eps
# 0.05; 94 and more trained to 93-95 % clean (benchmarks/README.md, "Training").
MIN_WARMUP_STEPS = 100


def run_training(trainer: Trainer, model: nn.Module, data: Dataset, options: TrainOptions,
                 progress: Progress) -> nn.Module:
    """Train `model` in place with `trainer.loss`; returns the model."""
    trainer.check(options)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    generator = torch.Generator().manual_seed(options.seed)
    steps_per_epoch = ceil(len(data.y_train) / options.batch_size)
    total = options.epochs * steps_per_epoch
    _check_warmup(trainer, options, total)
    state: dict = {}
    first = resume_point(options.checkpoint, options.resume, model, optimizer, generator, state)
    progress.start(options.epochs, steps_per_epoch, first)
    for epoch in range(first, options.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(data.y_train), generator=generator)
        sums = {"loss": 0.0, "accuracy": 0.0}
        for index in range(steps_per_epoch):
            step = _step(trainer, options, data, state, (epoch * steps_per_epoch + index) / total)
            for group in optimizer.param_groups:
                group["lr"] = options.lr * options.schedule.lr_factor(step.fraction)
            batch = order[index * options.batch_size:(index + 1) * options.batch_size]
            x, y = data.x_train[batch], data.y_train[batch]
            loss, logits = trainer.loss(model, x, y, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            metrics = {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).float().mean()),
                       "eps": step.eps, "kappa": step.kappa}
            sums["loss"] += metrics["loss"] * len(batch)
            sums["accuracy"] += metrics["accuracy"] * len(batch)
            progress.step(metrics)
        model.eval()
        trainer.end_epoch(model, data, step)
        summary = {key: value / len(data.y_train) for key, value in sums.items()}
        summary.update(eps=step.eps, kappa=step.kappa, validation_accuracy=accuracy(model, data.x_val, data.y_val),
                       seconds=time.perf_counter() - started)
        progress.epoch(epoch, summary)
        if options.checkpoint:
            save_checkpoint(options.checkpoint, epoch + 1, model, optimizer, generator, state)
    model.eval()
    return model


def _check_warmup(trainer: Trainer, options: TrainOptions, total_steps: int) -> None:
    """Warn when a robust trainer's eps = 0 warm-up is too short for the clean net to learn first."""
    steps = options.schedule.warmup * total_steps
    if trainer.uses_eps and options.eps > 0 and steps < MIN_WARMUP_STEPS:
        warnings.warn(f"{trainer.name}: the warm-up before eps ramps up lasts {steps:.0f} of {total_steps} steps; "
                      f"robust training from a barely trained net often collapses to chance accuracy: train "
                      f"for more epochs, or raise `warmup` (now {options.schedule.warmup:.3f} of training) so "
                      f"that it lasts at least {MIN_WARMUP_STEPS} steps", stacklevel=3)


def _step(trainer: Trainer, options: TrainOptions, data: Dataset, state: dict, fraction: float) -> Step:
    """The schedule's eps and kappa at `fraction` of training (kappa as the trainer adapts it)."""
    kappa = trainer.kappa(options.schedule.kappa(fraction, options.kappa_end), options, state)
    return Step(eps=options.schedule.eps(fraction, options.eps) * data.eps_scale, kappa=kappa, fraction=fraction,
                domain=data.domain, target_eps=options.eps * data.eps_scale, state=state, options=options)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Clean accuracy of `model` on (x, y)."""
    if len(y) == 0:
        return float("nan")
    return float((model(x).argmax(1) == y).float().mean())


def save_checkpoint(path: str, epochs_done: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, state: dict) -> None:
    """Everything needed to continue exactly where training stopped, written atomically."""
    record = {"epochs_done": epochs_done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
              "generator": generator.get_state(), "state": dict(state)}
    temporary = f"{path}.tmp"
    torch.save(record, temporary)
    os.replace(temporary, path)


def resume_point(checkpoint: str | None, resume: bool, model: nn.Module, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, state: dict) -> int:
    """The epochs already done: restored from `checkpoint` when resuming and it exists, else 0."""
    if resume and checkpoint and Path(checkpoint).exists():
        return load_checkpoint(checkpoint, model, optimizer, generator, state)
    return 0


def load_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, state: dict) -> int:
    """Restore a checkpoint in place; returns the number of epochs already done."""
    try:
        record = torch.load(path, weights_only=False)
        model.load_state_dict(record["model"])
        optimizer.load_state_dict(record["optimizer"])
    except (OSError, RuntimeError, KeyError, ValueError) as error:
        raise VerikitError(f"the checkpoint does not fit this run ({type(error).__name__})", path=path,
                           fix="resume with the trainer, data and architecture that wrote it, or delete it") from error
    generator.set_state(record["generator"])
    state.update(record["state"])
    return int(record["epochs_done"])
