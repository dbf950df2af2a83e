"""Training progress for the command line: a rich progress bar (loss, accuracy, eps, kappa) on stderr
and a per-epoch CSV log."""
from __future__ import annotations

import csv
from pathlib import Path

from verikit.trainers.base import Progress

COLUMNS = ("epoch", "loss", "accuracy", "validation_accuracy", "eps", "kappa", "seconds")


class CsvLog(Progress):
    """One row per epoch; a resumed run appends to the rows already there, a new run starts afresh."""

    def __init__(self, path: Path):
        self.path = path

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int = 0) -> None:
        if first_epoch == 0 or not self.path.exists():
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(COLUMNS)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        row = [epoch + 1] + [f"{metrics[key]:.6g}" for key in COLUMNS[1:]]
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow(row)


class BarProgress(Progress):
    """A rich bar over all steps, showing the last step's loss, accuracy, eps and kappa."""

    def __init__(self, log: Progress, show: bool = True):
        self.log, self.show, self.bar, self.task = log, show, None, None

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int = 0) -> None:
        self.log.start(epochs, steps_per_epoch, first_epoch)
        if not self.show:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        self.bar = Bar(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=False)
        self.bar.start()
        self.task = self.bar.add_task("train", total=epochs * steps_per_epoch, completed=first_epoch * steps_per_epoch,
                                      epoch=first_epoch + 1, epochs=epochs, status="")

    def step(self, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            status = (f"loss {metrics['loss']:.3f}  acc {metrics['accuracy']:.3f}  eps {metrics['eps']:.3f}  "
                      f"kappa {metrics['kappa']:.2f}")
            self.bar.update(self.task, advance=1, status=status)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.log.epoch(epoch, metrics)
        if self.bar is not None:
            self.bar.update(self.task, epoch=min(epoch + 2, self.bar.tasks[0].fields["epochs"]))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
