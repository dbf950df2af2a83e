"""The measurements of a comparison: a benchmark set (an instances.csv, a folder of ONNX + VNN-LIB
files, or a YAML experiment) times the methods, for one mode."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from verikit.compare.methods import MethodChoice
from verikit.compare.records import measurement_key
from verikit.errors import SpecError

SPEC_SUFFIXES = (".vnnlib", ".vnnlib.gz")


@dataclass(frozen=True)
class Settings:
    """What applies to every measurement: the mode, the norms (radius around a spec's centre), the
    verdicts' time limit, the radius search's steps and attack, a domain to clip balls to, and the set's
    folder (records name the files under it relative to it, so they read the same on another machine)."""

    mode: str = "bounds"
    norms: tuple[str, ...] = ("inf",)
    timeout: float = 60.0
    steps: int = 15
    attack: bool = True
    domain: tuple[float, float] | None = None
    root: str = ""


@dataclass(frozen=True)
class Task:
    """One measurement: a method on a model and a spec file, or on the `index`-th input of an .npy file
    (with `eps` and `norm`, and the `label` to keep: None for the model's prediction)."""

    mode: str
    model: str
    spec: str
    method: MethodChoice
    norm: str = ""
    eps: float | None = None
    label: int | None = None
    index: int | None = None  # set for an experiment's input: spec is then `file.npy#index`
    settings: Settings = field(default_factory=Settings)
    timeout: float = 60.0

    def key(self) -> tuple:
        return measurement_key(self.mode, self.recorded_model, self.recorded_spec, self.norm, self.eps,
                               self.method.label)

    @property
    def recorded_model(self) -> str:
        """The model as records name it: relative to the set's folder where it lies under it."""
        return relative_to_root(self.model, self.settings.root)

    @property
    def recorded_spec(self) -> str:
        """The spec file (or `inputs.npy#index`) as records name it."""
        file, marker, index = self.spec.partition("#")
        return relative_to_root(file, self.settings.root) + marker + index

    @property
    def input_file(self) -> str:
        return self.spec.rsplit("#", 1)[0]


def relative_to_root(path: str, root: str) -> str:
    """`path` relative to `root` where it lies under it (else as given); `/` separated."""
    if root and Path(path).resolve().is_relative_to(Path(root).resolve()):
        return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()
    return path


def read_set(path: str | Path, methods: list[MethodChoice], settings: Settings) -> list[Task]:
    """Every measurement of the set at `path` for the methods, in order (model, spec, norm, method)."""
    path = Path(path)
    settings = dataclasses.replace(settings, root=str((path if path.is_dir() else path.parent).resolve()))
    if path.is_dir():
        pairs = [(model, spec, settings.timeout) for model, spec in pair_folder(path)]
    elif path.suffix.lower() == ".csv":
        from verikit.suite import read_instances

        pairs = [(i.onnx, i.vnnlib, min(i.timeout, settings.timeout)) for i in read_instances(path)]
    else:
        raise SpecError("not a benchmark set", path=str(path),
                        fix="give an instances.csv, a folder of .onnx and .vnnlib files, or a .yaml experiment")
    tasks = []
    for model, spec, timeout in pairs:
        norms = settings.norms if settings.mode == "radius" else ("",)
        for norm in norms:
            tasks += [Task(settings.mode, model, spec, method, norm=norm, settings=settings, timeout=timeout)
                      for method in methods]
    return tasks


def pair_folder(folder: Path) -> list[tuple[str, str]]:
    """(model, spec) pairs of a folder: one model with every spec, or models and specs of the same stem."""
    models = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".onnx")
    specs = sorted(p for p in folder.iterdir() if p.name.lower().endswith(SPEC_SUFFIXES))
    if not models or not specs:
        raise SpecError(f"found {len(models)} .onnx and {len(specs)} .vnnlib files", path=str(folder),
                        fix="put the models (.onnx) and their specs (.vnnlib) in the folder")
    if len(models) == 1:
        return [(str(models[0].resolve()), str(spec.resolve())) for spec in specs]
    by_stem = {model.stem: model for model in models}
    pairs = []
    for spec in specs:
        stem = spec.name.split(".")[0]
        if stem not in by_stem:
            raise SpecError(f"no model {stem}.onnx for the spec {spec.name}", path=str(folder),
                            fix="with several models, give each spec its model's stem (net.onnx, net.vnnlib)")
        pairs.append((str(by_stem[stem].resolve()), str(spec.resolve())))
    return pairs
