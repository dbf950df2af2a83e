"""The instance's deadline, seen from inside long computations.

`verify` sets it for everything it calls (`with deadline.until(t):`); the engines' loops call `check()`
between layers and chunks, which raises `DeadlineReached` once the time has passed, so one bound pass
on a large conv net cannot overrun the timeout by more than one layer's work. Outside `until` (the
`bound` and `radius` commands, the tests) `check()` does nothing. A context variable, not an argument
threaded through every engine: a third party's method that calls the engines gets the check for free.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_DEADLINE: ContextVar[float | None] = ContextVar("verikit_deadline", default=None)
_STOP: ContextVar[threading.Event | None] = ContextVar("verikit_stop", default=None)


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


@contextmanager
def stop_on(event: threading.Event) -> Iterator[None]:
    """Computations inside the block also stop with DeadlineReached once `event` is set (another
    worker has found the answer, verikit.scale.pool)."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def check() -> None:
    """Raise DeadlineReached if the current deadline has passed (or the block's stop event is set)."""
    deadline, stop = _DEADLINE.get(), _STOP.get()
    if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()):
        raise DeadlineReached


def current() -> float | None:
    """The deadline in force (time.monotonic()), or None."""
    return _DEADLINE.get()
