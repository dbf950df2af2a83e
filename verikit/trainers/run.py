"""One training run as `verikit train` does it: resolve the trainer, data, architecture and options
(every check before any work), train with progress and checkpoints, export to ONNX."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from verikit.errors import VerikitError
from verikit.trainers.architectures import build
from verikit.trainers.base import Progress, TrainOptions, Trainer
from verikit.trainers.config import build_options
from verikit.trainers.data import Dataset, load_data
from verikit.trainers.export import export_onnx
from verikit.trainers.loop import accuracy
from verikit.trainers.progress import BarProgress, CsvLog

DEFAULTS = {"data": "digits", "out": "model.onnx"}  # and the trainer's own architecture


def get_trainer(name: str) -> Trainer:
    """The registered trainer `name` (a clear error listing the choices otherwise)."""
    from verikit.plugins import registry

    table = registry().entries["trainer"]
    if name not in table:
        raise VerikitError(f"no trainer named {name!r}", place="TRAINER",
                           fix=f"choose one of: {', '.join(sorted(table))}")
    return table[name].provider


@dataclass
class TrainResult:
    path: Path
    log: Path
    test_accuracy: float


@dataclass
class TrainRun:
    """A checked run: everything resolved, nothing trained yet."""

    trainer: Trainer
    data: Dataset
    arch: str
    options: TrainOptions
    out: Path
    force: bool

    @classmethod
    def prepare(cls, trainer: str, values: dict[str, Any], force: bool = False, resume: bool = False) -> "TrainRun":
        """Check the names, the option types and ranges, eps against the data domain, and --out."""
        chosen = get_trainer(trainer)
        values = {**DEFAULTS, "arch": chosen.architecture, **values}
        options = build_options(chosen.Options, values, source="options")
        out = Path(values["out"])
        if out.exists() and not force:
            raise VerikitError("the output file exists", path=str(out), fix="pass --force to replace it, or "
                                                                             "choose another --out")
        if not out.parent.exists():
            raise VerikitError("its directory does not exist", path=str(out), fix="create the directory first")
        data = load_data(values["data"], seed=options.seed)
        data.check_eps(options.eps)
        # a bad name, a misfit or a model the trainer cannot train fails here, before any work
        chosen.check_model(build(values["arch"], data.input_shape, data.classes, options.seed))
        options.checkpoint, options.resume = str(out) + ".ckpt", resume
        chosen.check(options)
        return cls(chosen, data, values["arch"], options, out, force)

    def execute(self, show_progress: bool = True) -> TrainResult:
        """Train, export (checked) and report the test accuracy."""
        model = build(self.arch, self.data.input_shape, self.data.classes, self.options.seed)
        log = self.out.with_suffix(".csv")
        progress = BarProgress(CsvLog(log), show=show_progress)
        try:
            self.trainer.train(model, self.data, self.options, progress)
        finally:
            progress.stop()
        export_onnx(model, self.data.input_shape, self.out, force=self.force, check_inputs=self.data.x_test[:8])
        return TrainResult(self.out, log, accuracy(model, self.data.x_test, self.data.y_test))


def train(trainer: str, data: str | Dataset = "digits", model: nn.Module | str | None = None,
          progress: Progress | None = None, **options: Any) -> nn.Module:
    """Python API: train `model` (an architecture name, the user's own nn.Module, or None for the
    trainer's own architecture) with a registered trainer; `options` are the trainer's Options fields
    (and the schedule's), type-checked."""
    chosen = get_trainer(trainer)
    settings = build_options(chosen.Options, options, source="options")
    dataset = data if isinstance(data, Dataset) else load_data(data, seed=settings.seed)
    dataset.check_eps(settings.eps)
    if model is None or isinstance(model, str):
        model = build(model or chosen.architecture, dataset.input_shape, dataset.classes, settings.seed)
    chosen.check_model(model)
    return chosen.train(model, dataset, settings, progress)
