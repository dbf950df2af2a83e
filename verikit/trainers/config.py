"""Training options from a YAML config and the command line, each value type-checked against the
trainer's options dataclass (and the schedule's: warmup, ramp_end, lr_drops) with one clear error."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from verikit.errors import VerikitError
from verikit.trainers.schedule import Schedule

RUN_KEYS = {"data": str, "arch": str, "out": str}  # what the command itself reads
SKIPPED = {"schedule", "checkpoint", "resume"}  # set by the command, not by the user


def read_config(path: str) -> dict[str, Any]:
    """The mapping in a YAML file (keys as the options' names; dashes may stand for underscores)."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise VerikitError(f"cannot read the config ({error})", path=path, fix="give a readable YAML file") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise VerikitError("the config must be a mapping of option names to values", path=path,
                           fix="write lines like `epochs: 5`")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in SKIPPED}


def _convert(value: Any, kind: Any, key: str, source: str) -> Any:
    """`value` as `kind` (bool, int, float, str, X | None, tuple[float, ...]) or a VerikitError."""
    if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in typing.get_args(kind):
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        return tuple(_convert(item, typing.get_args(kind)[0], key, source) for item in value)
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}.get(kind, False)
    if not ok:
        name = getattr(kind, "__name__", str(kind))
        raise VerikitError(f"option {key!r} must be {name}, not {type(value).__name__} ({value!r})", place=source,
                           fix=f"give {key} a {name} value")
    return float(value) if kind is float else value


def build_options(options_class: type, values: dict[str, Any], source: str = "config"):
    """An instance of the trainer's options dataclass from `values` (unknown keys are an error)."""
    fields, schedule_fields = _field_types(options_class), _field_types(Schedule)
    unknown = sorted(set(values) - set(fields) - set(schedule_fields) - set(RUN_KEYS))
    if unknown:
        known = ", ".join(sorted({*fields, *schedule_fields, *RUN_KEYS}))
        raise VerikitError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}", place=source,
                           fix=f"use only: {known}")
    chosen = {k: _convert(v, fields[k], k, source) for k, v in values.items() if k in fields}
    timing = {k: _convert(v, schedule_fields[k], k, source) for k, v in values.items() if k in schedule_fields}
    default = options_class().schedule  # a trainer's own schedule, where its Options define one
    options = options_class(**chosen, schedule=dataclasses.replace(default, **timing))
    check_ranges(options, source)
    return options


def check_ranges(options, source: str) -> None:
    """Counts at least 1, a positive learning rate, eps at least 0, schedule fractions in [0, 1]."""
    problems = []
    if options.epochs < 1 or options.batch_size < 1:
        problems.append("epochs and batch_size must be at least 1")
    if options.lr <= 0:
        problems.append("lr must be above 0")
    if options.eps < 0:
        problems.append("eps must be at least 0")
    schedule = options.schedule
    if not all(0 <= f <= 1 for f in (schedule.warmup, schedule.ramp_end, *schedule.lr_drops)):
        problems.append("warmup, ramp_end and lr_drops are fractions of training, in [0, 1]")
    if problems:
        raise VerikitError("; ".join(problems), place=source, fix="correct the option values")
