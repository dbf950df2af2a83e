"""The plugin contracts. A plugin is a module (or object) registered under the entry-point group
`verikit` that implements one or more of these hooks; each hook receives a `register` callback.
verikit's own layers, methods and trainers register through these same hooks.
"""
from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("verikit")
hookimpl = pluggy.HookimplMarker("verikit")


@hookspec
def verikit_layers(register: Callable) -> None:
    """Register layer rules: call `register(rule_class)` for each LayerRule subclass.

    The class's `op_types` names the ONNX op types it handles. Pass `override=True` to replace a rule
    another plugin registered for the same op type on purpose."""


@hookspec
def verikit_methods(register: Callable) -> None:
    """Register methods: call `register(method)` for each Method (kind `bound`, `attack` or `complete`)."""


@hookspec
def verikit_trainers(register: Callable) -> None:
    """Register training rules: call `register(trainer)` for each Trainer."""


@hookspec
def verikit_datasets(register: Callable) -> None:
    """Register training datasets: call `register(source)` for each DataSource
    (verikit.trainers.data): a name, a summary and `make(seed, **options) -> Dataset`."""


@hookspec
def verikit_spec_readers(register: Callable) -> None:
    """Register spec readers: call `register(suffixes, read)` where read(path) returns a Property."""
