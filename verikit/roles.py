"""Which registered methods fit which role, checked before any work starts.

A method plugin declares its `kind`: "bound" (bounds `c . y` over a region), "attack" (searches for a
counterexample) or "complete" (decides a property). Naming one in another role (`--attack ibp`,
`bound -m pgd`) would fail deep inside a run; the command line and the Python API call these checks
first, so the message names the role and lists the methods that fit it.
"""
from __future__ import annotations

import math
from typing import Iterable

from verikit.errors import PluginError, VerikitError

ROLE_NAMES = {"bound": "a bound method", "attack": "an attack method", "complete": "a complete method"}


def method_names(role: str) -> list[str]:
    """The registered methods of a role ("bound", "attack" or "complete"), sorted."""
    from verikit.plugins import registry

    return sorted(entry.name for entry in registry().methods(role))


def check_method(name: str, role: str, option: str) -> None:
    """Raise a PluginError unless `name` is a registered method of `role`; `option` names the
    argument it came from (`--attack`, `method=`) in the message."""
    from verikit.plugins import registry

    fitting = method_names(role)
    if name in fitting:
        return
    fix = f"{option} takes {ROLE_NAMES[role]}: {', '.join(fitting) or '(none registered)'}"
    entry = next((e for e in registry().methods() if e.name == name), None)
    if entry is None:
        raise PluginError(f"no method named '{name}'", place=option, fix=fix)
    raise PluginError(f"'{name}' is {ROLE_NAMES.get(entry.provider.kind, entry.provider.kind)}, "
                      f"not {ROLE_NAMES[role]}", place=option, fix=fix)


def check_verify_methods(methods: Iterable[str] | None, attack: str | None, complete: str | None,
                         options: tuple[str, str, str] = ("--method", "--attack", "--complete")) -> None:
    """Check every method a verify call names, in its role (None: that stage is skipped or defaults)."""
    method_option, attack_option, complete_option = options
    for name in methods or ():
        check_method(name, "bound", method_option)
    if attack is not None:
        check_method(attack, "attack", attack_option)
    if complete is not None:
        check_method(complete, "complete", complete_option)


def check_timeout(seconds: float, option: str = "--timeout") -> None:
    """Raise a VerikitError unless `seconds` is a finite positive number."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise VerikitError(f"the timeout must be a finite number of seconds above 0, not {seconds!r}",
                           place=option, fix="give e.g. 60")
