"""The instance's deadline, seen from inside long computations.

`verify` sets it for everything it calls (`with deadline.until(t):`); the engines' loops call `check()`
between layers and chunks, which raises `DeadlineReached` once the time has passed, so one bound pass
on a large conv net cannot overrun the timeout by more than one layer's work. Outside `until` (the
`bound` and `radius` commands, the tests) `check()` does nothing. A context variable, not an argument
threaded through every engine: a third party's method that calls the engines gets the check for free.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_DEADLINE: ContextVar[float | None] = ContextVar("verikit_deadline", default=None)


class DeadlineReached(Exception):
    """The instance's time ran out inside a computation; `verify` turns it into a `timeout` verdict."""


@contextmanager
def until(deadline: float | None) -> Iterator[None]:
    """Computations inside the block stop with DeadlineReached after `deadline` (time.monotonic())."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check() -> None:
    """Raise DeadlineReached if the current deadline has passed."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineReached


def current() -> float | None:
    """The deadline in force (time.monotonic()), or None."""
    return _DEADLINE.get()
