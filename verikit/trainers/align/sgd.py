"""Plain SGD at a constant rate driven by a learning rule's updates instead of autograd's: the loop the
Align trainers (feed-forward and recurrent) share. Seeded batch order, full batches only (as the reference
code: the shuffled remainder waits for a later epoch), a checkpoint after every epoch and resuming from one
(the checkpoint format of `verikit.trainers.loop`)."""
from __future__ import annotations

import time
from typing import Callable, Protocol

import torch
from torch import nn

from verikit.trainers.base import Progress
from verikit.trainers.loop import resume_point, save_checkpoint

Updates = list[torch.Tensor | None]
Step = Callable[[torch.Tensor], tuple[Updates, dict[str, float]]]


class SGDOptions(Protocol):
    """What the loop reads from a trainer's options."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    checkpoint: str | None
    resume: bool


def run_sgd(model: nn.Module, step: Step, count: int, options: SGDOptions, progress: Progress,
            evaluate: Callable[[], dict[str, float]], state: dict) -> None:
    """Train `model` in place: for each batch of indices into the `count` training examples, `step`
    returns an update per parameter (None: unchanged) and the batch's metrics; p -= lr * update.
    `evaluate` adds metrics after each epoch; `state` (the rule's) is saved in checkpoints."""
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=options.lr)
    generator = torch.Generator().manual_seed(options.seed)
    batch = min(options.batch_size, count)
    per_epoch = count // batch
    first = resume_point(options.checkpoint, options.resume, model, optimizer, generator, state)
    progress.start(options.epochs, per_epoch, first)
    for epoch in range(first, options.epochs):
        started = time.perf_counter()
        order = torch.randperm(count, generator=generator)
        sums: dict[str, float] = {}
        for index in range(per_epoch):
            model.train()
            updates, metrics = step(order[index * batch:(index + 1) * batch])
            optimizer.zero_grad(set_to_none=True)
            for parameter, update in zip(params, updates):
                parameter.grad = update
            optimizer.step()
            progress.step(metrics)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
        summary = {key: value / per_epoch for key, value in sums.items()}
        summary.update(evaluate(), seconds=time.perf_counter() - started)
        progress.epoch(epoch, summary)
        if options.checkpoint:
            save_checkpoint(options.checkpoint, epoch + 1, model, optimizer, generator, state)
