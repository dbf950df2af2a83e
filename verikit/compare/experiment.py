"""YAML experiments: models x inputs x norms x epsilons x methods, inputs from .npy files.

    mode: radius                 # bounds | radius | verdicts (--mode overrides)
    models: [a.onnx, b.onnx]     # paths relative to this file; {file: c.onnx, inputs: [...]} gives a
                                 # model its own inputs (e.g. another input size) instead of the list below
    inputs:                      # an .npy holds one input, or a stack along its first axis
      - x.npy
      - {file: more.npy, labels: [3, 1]}   # labels: given, else the model's prediction
    norms: [inf, 2]
    epsilons: [0.01, 0.03]       # bounds and verdicts: the ball's radius (radius mode searches it)
    methods: [ibp, crown, {name: cnn-cert, label: cnn-cert-ada, options: {mode: ada}}]
    domain: [0, 1]               # optional: clip every ball to this box
    steps: 15                    # radius: search steps;  attack: true  (the PGD upper bracket)
    timeout: 60                  # verdicts: seconds an instance
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import yaml

from verikit.compare.methods import MethodChoice, method_from_yaml
from verikit.compare.tasks import Settings, Task
from verikit.errors import SpecError

KEYS = {"mode", "models", "inputs", "norms", "epsilons", "methods", "domain", "steps", "attack", "timeout"}
NORMS = ("inf", "2", "1")


def read_experiment(path: str | Path, methods: list[MethodChoice] | None, settings: Settings,
                    mode_given: bool) -> tuple[list[Task], list[MethodChoice], Settings]:
    """The experiment's measurements, its methods (unless `methods` overrides them) and settings
    (the file's, but `settings.mode` wins where `mode_given`)."""
    path = Path(path)
    document = _load(path)
    error = _error_for(path)
    settings = dataclasses.replace(_settings(document, settings, mode_given, error), root=str(path.parent.resolve()))
    if methods is None:
        if not isinstance(document.get("methods"), list) or not document["methods"]:
            raise error("methods", "no methods", "list them (methods: [ibp, crown]) or give --methods")
        methods = [method_from_yaml(m, f"{path}: methods") for m in document["methods"]]
    shared = [_inputs(path, item, error) for item in _list(document, "inputs", error)] \
        if "inputs" in document else None
    models = [_model(path, entry, shared, error) for entry in _list(document, "models", error)]
    norms = [str(n) for n in document.get("norms", ["inf"])]
    if any(n not in NORMS for n in norms):
        raise error("norms", f"unknown norm in {norms}", "use inf, 2 or 1")
    epsilons = [None] if settings.mode == "radius" else [_epsilon(e, error) for e in _list(document, "epsilons", error)]
    tasks = []
    for model, inputs in models:
        for file, labels, count in inputs:
            for index in range(count):
                label = labels[index] if labels is not None else None
                for norm in norms:
                    for eps in epsilons:
                        tasks += [Task(settings.mode, model, f"{file}#{index}", method, norm=norm, eps=eps,
                                       label=label, index=index, settings=settings, timeout=settings.timeout)
                                  for method in methods]
    return tasks, methods, settings


def _load(path: Path) -> dict:
    if not path.is_file():
        raise SpecError("file not found", path=str(path), fix="give a YAML experiment file")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as problem:
        raise SpecError(f"not valid YAML ({str(problem).splitlines()[0]})", path=str(path),
                        fix="see `verikit compare --help` for the experiment format") from None
    if not isinstance(document, dict):
        raise SpecError("an experiment is a YAML mapping", path=str(path), fix="start with models: [...]")
    unknown = set(document) - KEYS
    if unknown:
        raise SpecError(f"unknown keys {sorted(unknown)}", path=str(path), fix=f"use only {sorted(KEYS)}")
    return document


def _error_for(path: Path):
    def error(key: str, message: str, fix: str) -> SpecError:
        return SpecError(message, path=str(path), place=key, fix=fix)

    return error


def _settings(document: dict, settings: Settings, mode_given: bool, error) -> Settings:
    """The file's settings over the command line's defaults (its mode only where --mode is not given)."""
    changes = {}
    if "mode" in document and not mode_given:
        changes["mode"] = str(document["mode"])
    if "domain" in document:
        domain = document["domain"]
        if not (isinstance(domain, list) and len(domain) == 2 and all(isinstance(v, (int, float)) for v in domain)
                and domain[0] < domain[1]):
            raise error("domain", f"bad domain {domain!r}", "give [LOW, HIGH] with LOW < HIGH")
        changes["domain"] = (float(domain[0]), float(domain[1]))
    for key, kind in (("steps", int), ("timeout", (int, float)), ("attack", bool)):
        if key in document:
            if not isinstance(document[key], kind) or (key != "attack" and document[key] <= 0):
                raise error(key, f"bad {key} {document[key]!r}", "give a positive number (attack: true or false)")
            changes[key] = document[key]
    return dataclasses.replace(settings, **changes)


def _list(document: dict, key: str, error) -> list:
    value = document.get(key)
    if not isinstance(value, list) or not value:
        raise error(key, f"{key} must be a non-empty list", f"e.g. {key}: [...]")
    return value


def _file(path: Path, name, key: str, error) -> Path:
    file = (path.parent / str(name)).resolve()
    if not file.is_file():
        raise error(key, f"{name} not found", f"give paths relative to {path.parent}")
    return file


def _model(path: Path, entry, shared: list | None, error) -> tuple[str, list]:
    """(model file, its inputs) of one entry of `models`: a path, or {file, inputs}."""
    own = None
    if isinstance(entry, dict):
        own = [_inputs(path, item, error) for item in _list(entry, "inputs", error)] if "inputs" in entry else None
        entry = entry.get("file")
    model = _file(path, entry, "models", error)
    if own is None and shared is None:
        raise error("inputs", f"no inputs for {model.name}",
                    "give inputs: [x.npy] at the top, or in the model's entry {file: m.onnx, inputs: [x.npy]}")
    return str(model), own if own is not None else shared


def _epsilon(value, error) -> float:
    if not isinstance(value, (int, float)) or value <= 0:
        raise error("epsilons", f"bad epsilon {value!r}", "give radii above 0")
    return float(value)


def _inputs(path: Path, item, error) -> tuple[str, list[int] | None, int]:
    """(file, labels or None, number of inputs) of one entry of `inputs`."""
    labels = None
    if isinstance(item, dict):
        labels = item.get("labels")
        item = item.get("file")
    file = _file(path, item, "inputs", error)
    try:
        array = np.load(file, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as problem:
        raise error("inputs", f"cannot read {file.name} as a .npy array ({problem})", "save it with numpy.save")
    count = 1 if array.ndim <= 1 else array.shape[0]
    if labels is not None and (not isinstance(labels, list) or len(labels) != count
                               or not all(isinstance(v, int) for v in labels)):
        raise error("inputs", f"{file.name} holds {count} inputs: give as many integer labels",
                    "labels: [3, 1, ...], one per input")
    return str(file), labels, count
