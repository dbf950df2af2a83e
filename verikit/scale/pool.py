"""Branch and bound's pieces on a Dask cluster (`verikit verify --scheduler`): a process pool's face
(apply_async, imap_unordered, terminate) over a Dask client, which verikit.methods.bab_pool hands out
instead of a local pool inside `on_cluster`.

Each graph and property crosses the wire once a pool (verikit.scale.files.keep), each piece with its
sub-boxes or domains. The instance's deadline (the one in force, verikit.deadline) travels as the seconds left,
since monotonic clocks differ between machines, and holds inside the worker's bound passes too. On
`terminate` (a confirmed counterexample) a Dask Event is set: every running piece stops at its next
deadline check, and the pieces not started are cancelled. Pieces run with one process each: a Dask
worker is a daemonic process, which may not start a pool of its own.
"""
from __future__ import annotations

import functools
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from verikit import deadline
from verikit.methods.bab_pool import run_job
from verikit.scale.cluster import set_threads
from verikit.scale.files import keep

STOP_POLL = 0.5  # seconds between a worker's looks at the stop event


@dataclass(frozen=True)
class SecondsLeft:
    """The instance's deadline on its way to a worker: the seconds left when the piece was sent, and
    when that was (time.time(): the machines' clocks are assumed to agree, as NTP keeps them)."""

    seconds: float
    sent: float

    def deadline(self) -> float:
        """The deadline on this machine's time.monotonic(): the time spent queued no longer counts."""
        return time.monotonic() + self.seconds - max(0.0, time.time() - self.sent)


class DaskPool:
    """A pool of the client's cluster for one branch-and-bound search (see the module doc)."""

    def __init__(self, client):
        from distributed import Event

        self.client, self.futures, self.sent = client, [], {}
        self.stop = Event(f"verikit-stop-{uuid.uuid4().hex}", client=client)

    def __enter__(self) -> "DaskPool":
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()

    def apply_async(self, function: Callable, args: tuple = ()) -> "_Pending":
        return _Pending(self._submit(function, args))

    def imap_unordered(self, function: Callable, jobs: Iterable) -> Iterator[Any]:
        """function(job) for each job, as each finishes."""
        from distributed import as_completed

        for future in as_completed([self._submit(function, (job,)) for job in jobs]):
            yield future.result()

    def terminate(self) -> None:
        """Stop every piece: the running ones at their next deadline check, the others before they start."""
        self.stop.set()
        self.client.cancel(self.futures)
        self.futures = []

    def _submit(self, function: Callable, args: tuple):
        """Send function(*args), unpacking a `run_job(partial)` call so that its graph and property are
        sent once and its deadline as seconds left."""
        call = args[0] if function is run_job and isinstance(args[0], functools.partial) else \
            functools.partial(function, *args)
        arguments = [self._remote(value) for value in call.args]
        future = self.client.submit(run_piece, self.stop.name, call.func, arguments, dict(call.keywords),
                                    pure=False)
        self.futures.append(future)
        return future

    def _remote(self, value: Any) -> Any:
        """What a piece's argument becomes on the wire: a graph or property sent once, the deadline as
        seconds left, anything else itself."""
        from verikit.graph import Graph
        from verikit.spec.property import Property

        if isinstance(value, (Graph, Property)):
            if id(value) not in self.sent:  # the value is kept with its future, so its id stays its own
                key = f"verikit-{type(value).__name__}-{uuid.uuid4().hex}"
                self.sent[id(value)] = (value, keep(self.client, value, key))
            return self.sent[id(value)][1]
        if isinstance(value, float) and value == deadline.current():
            return SecondsLeft(value - time.monotonic(), time.time())
        return value


@dataclass
class _Pending:
    """A piece sent with apply_async: get() waits for its value (or raises its exception)."""

    future: Any

    def get(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout)


def run_piece(stop_name: str, function: Callable, arguments: list, keywords: dict) -> Any:
    """On a worker: run one piece under the instance's deadline, stopping early once the stop event
    named `stop_name` is set."""
    from distributed import Event, get_client

    set_threads()
    end = next((value.deadline() for value in arguments if isinstance(value, SecondsLeft)), None)
    arguments = [end if isinstance(value, SecondsLeft) else value for value in arguments]
    stopped, finished = threading.Event(), threading.Event()
    event = Event(stop_name, client=get_client())  # the worker's client, which the watching thread shares
    watcher = threading.Thread(target=_watch, args=(event, stopped, finished), daemon=True)
    watcher.start()
    try:
        with deadline.until(end), deadline.stop_on(stopped):
            return function(*arguments, **keywords)
    finally:
        finished.set()


def _watch(event, stopped: threading.Event, finished: threading.Event) -> None:
    """Set `stopped` once the Dask `event` is set, looking every STOP_POLL seconds until `finished`."""
    while not finished.is_set():
        if event.wait(timeout=STOP_POLL):
            stopped.set()
            return
