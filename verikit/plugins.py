"""The plugin manager: loads the entry-point group `verikit` once, builds the registries of layer
rules, methods, trainers, datasets and spec readers, and answers which plugin handles an op or a method.

Set VERIKIT_PLUGINS to a comma-separated list of distribution names to restrict which third-party
plugins load (verikit's own built-ins always load); set it to an empty string to load none.
A third-party plugin that fails to import is skipped with a warning (`failures` keeps why), so one
broken install does not stop every model; a model that needs one of its ops names it in its error.
"""
from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy

from verikit import hookspecs
from verikit.errors import PluginError

GROUP = "verikit"
OWN_DISTRIBUTION = "verikit"


@dataclass(frozen=True)
class Registration:
    """One thing a plugin provides: an op type, a method, a trainer or a spec format."""

    name: str
    kind: str  # "layer" | "method" | "trainer" | "dataset" | "spec-reader"
    provider: Any
    plugin: str
    distribution: str
    override: bool = False


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Registration]] = {
            "layer": {}, "method": {}, "trainer": {}, "dataset": {}, "spec-reader": {}}

    def add(self, entry: Registration) -> None:
        table = self.entries[entry.kind]
        existing = table.get(entry.name)
        if existing is not None and not entry.override:
            if existing.override:
                return
            raise PluginError(
                f"{entry.kind} '{entry.name}' is provided twice: by plugin '{existing.plugin}' "
                f"(distribution {existing.distribution}) and by plugin '{entry.plugin}' "
                f"(distribution {entry.distribution})",
                fix="uninstall one of them, or register the replacement with override=True")
        table[entry.name] = entry

    def layer(self, op_type: str) -> Registration | None:
        return self.entries["layer"].get(op_type)

    def method(self, name: str) -> Registration:
        entry = self.entries["method"].get(name)
        if entry is None:
            known = ", ".join(sorted(self.entries["method"]))
            raise PluginError(f"no method named '{name}'", fix=f"choose one of: {known}")
        return entry

    def methods(self, kind: str | None = None) -> list[Registration]:
        return [e for e in self.entries["method"].values() if kind is None or e.provider.kind == kind]

    def all(self) -> list[Registration]:
        return [e for table in self.entries.values() for e in table.values()]


def _registrar(registry: Registry, kind: str, plugin: str, distribution: str):
    """The `register` callback handed to one plugin's hook."""

    def register(provider: Any, *names: str, override: bool = False) -> None:
        if kind == "layer":
            keys = provider.op_types
        elif kind == "spec-reader":
            keys = names or ()
        else:
            keys = (provider.name,)
        for key in keys:
            registry.add(Registration(key, kind, provider, plugin, distribution, override))

    return register


_HOOKS = {"layer": "verikit_layers", "method": "verikit_methods", "trainer": "verikit_trainers",
          "dataset": "verikit_datasets", "spec-reader": "verikit_spec_readers"}


class PluginManager:
    """Wraps one pluggy manager; remembers which distribution each plugin came from."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}
        self.failures: dict[str, str] = {}  # plugin name -> why it was skipped
        self._registry: Registry | None = None

    def load_entry_points(self) -> None:
        allowed = os.environ.get("VERIKIT_PLUGINS")
        allowed_set = None if allowed is None else {d.strip() for d in allowed.split(",") if d.strip()}
        for ep in importlib.metadata.entry_points(group=GROUP):
            distribution = ep.dist.name if ep.dist is not None else "unknown"
            if distribution != OWN_DISTRIBUTION and allowed_set is not None and distribution not in allowed_set:
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as error:
                why = f"plugin '{ep.name}' from {distribution} failed to import: {error}"
                if distribution == OWN_DISTRIBUTION:  # verikit itself is broken: nothing can work
                    raise PluginError(why, fix="reinstall verikit") from error
                self.failures[ep.name] = why  # a broken third-party plugin must not take verikit down
                warnings.warn(f"{why}; skipped (reinstall or uninstall {distribution})", RuntimeWarning,
                              stacklevel=2)
                continue
            self.register(module, ep.name, distribution)

    def register(self, plugin: Any, name: str, distribution: str = "local") -> None:
        self.pm.register(plugin, name=name)
        self.distributions[name] = distribution
        self._registry = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.distributions.pop(name, None)
        self._registry = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            registry = Registry()
            for kind, hook_name in _HOOKS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    name = impl.plugin_name
                    impl.function(register=_registrar(registry, kind, name, self.distributions.get(name, "local")))
            self._registry = registry
        return self._registry


_manager: PluginManager | None = None


def manager() -> PluginManager:
    """The process-wide plugin manager, with entry points loaded on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
        _manager.load_entry_points()
    return _manager


def registry() -> Registry:
    return manager().registry


def get_method(name: str):
    """The registered Method object named `name` (clear error listing the choices otherwise)."""
    return registry().method(name).provider
