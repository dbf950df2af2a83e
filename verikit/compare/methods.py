"""Which methods a comparison runs: `crown`, a chain `ibp+crown` (verdicts), or a method with options
`cnn-cert:mode=ada` (on the command line) / `{name: cnn-cert, options: {mode: ada}}` (in YAML)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import yaml

from verikit.errors import VerikitError

MODES = ("bounds", "radius", "verdicts")


@dataclass(frozen=True)
class MethodChoice:
    """One column of a comparison: its label, the bound methods it names (several: a chain that
    `verify` tries in order) and the options of a single method."""

    label: str
    chain: tuple[str, ...]
    options: dict = field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        return self.chain[0]

    def options_object(self):
        """The method's options dataclass, filled from `options` (a bad key is a clear error)."""
        from verikit.plugins import get_method

        method = get_method(self.name)
        try:
            return method.Options(**self.options) if self.options else method.default_options()
        except TypeError:
            known = ", ".join(f.name for f in dataclasses.fields(method.Options)) or "none"
            raise VerikitError(f"{self.label}: unknown option among {sorted(self.options)}", place="methods",
                               fix=f"the options of {self.name} are: {known}") from None

    def options_json(self) -> str:
        """Every method's options as a dict (from its options dataclass), as JSON."""
        from verikit.plugins import get_method

        chosen = {name: get_method(name).default_options() for name in self.chain}
        chosen[self.name] = self.options_object()
        return json.dumps({name: dataclasses.asdict(value) for name, value in chosen.items()}, default=str,
                          sort_keys=True)


def parse_methods(text: str) -> list[MethodChoice]:
    """Methods from `--methods`: comma-separated, `a+b` a chain, `name:key=value:key=value` options."""
    return [_parse_one(item.strip()) for item in text.split(",") if item.strip()]


def _parse_one(item: str) -> MethodChoice:
    name, *settings = item.split(":")
    options = {}
    for setting in settings:
        key, equals, value = setting.partition("=")
        if not equals or not key:
            raise VerikitError(f"bad option {setting!r} in {item!r}", place="--methods",
                               fix="write options as name:key=value, e.g. cnn-cert:mode=ada")
        options[key.strip()] = yaml.safe_load(value)
    return MethodChoice(item, tuple(part.strip() for part in name.split("+")), options)


def method_from_yaml(value, place: str) -> MethodChoice:
    """A method of a YAML experiment: a string as on the command line, or {name, label, options}."""
    if isinstance(value, str):
        return _parse_one(value)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise VerikitError(f"bad method {value!r}", place=place,
                           fix="give a method name, or {name: cnn-cert, label: cnn-cert-ada, options: {mode: ada}}")
    options = value.get("options") or {}
    if not isinstance(options, dict):
        raise VerikitError("the options of a method are a mapping", place=place, fix="e.g. options: {mode: ada}")
    name = value["name"]
    return MethodChoice(str(value.get("label", name)), tuple(name.split("+")), dict(options))


def check_methods(choices: list[MethodChoice], mode: str) -> None:
    """Before any work: every name is a registered bound method, chains and options fit the mode,
    labels are unique."""
    from verikit.roles import check_method

    if mode not in MODES:
        raise VerikitError(f"unknown mode {mode!r}", place="--mode", fix=f"use one of {', '.join(MODES)}")
    labels = [choice.label for choice in choices]
    if len(set(labels)) != len(labels):
        raise VerikitError(f"a method is named twice in {', '.join(labels)}", place="methods",
                           fix="name each method once (give YAML methods distinct labels)")
    for choice in choices:
        for name in choice.chain:
            check_method(name, "bound", "methods")
        if len(choice.chain) > 1 and mode != "verdicts":
            raise VerikitError(f"the chain {choice.label} only makes sense for verdicts", place="methods",
                               fix="give single methods in bounds and radius mode")
        if choice.options and len(choice.chain) > 1:
            raise VerikitError(f"{choice.label}: options belong to one method, not a chain", place="methods",
                               fix="give the options to a single method (verify runs a chain's with defaults)")
        choice.options_object()
