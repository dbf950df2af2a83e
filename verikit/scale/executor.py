"""Jobs on a Dask cluster whose deadlines hold, with one outcome each, streamed as they finish.

Dask has no per-task timeout: each job keeps its own deadline (verify's), and a watchdog here stops a
job that overstays it by more than a grace period: it cancels the job and restarts its worker (whose
thread cannot be interrupted), and the job's outcome is `timeout`. A job announces on an event topic
where and when it starts, so queueing time never counts. A job whose worker dies is retried by the
scheduler while its allowed failures last (a local cluster: once, verikit.scale.cluster), then its
outcome is `error` with the reason; an exception inside a job is an `error` outcome too, so one bad
instance never stops the rest.
"""
from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

STARTED = "verikit-started"  # the event topic on which a job says, as it starts, on which worker


@dataclass(frozen=True)
class ExecutorOptions:
    """grace: seconds past a job's own deadline before the watchdog stops it; poll: seconds between the
    watchdog's looks."""

    grace: float = 30.0
    poll: float = 0.5


@dataclass
class Job:
    """`function(*args)` to run on a worker (Dask futures among the args are replaced by their data);
    `seconds`: its own deadline, which the watchdog enforces (None: none)."""

    function: Callable
    args: tuple = ()
    seconds: float | None = None


@dataclass
class Outcome:
    """A job's end: its value, or the failure (`timeout`, `error`) and why; `seconds` since the job
    last started on a worker, as seen from here."""

    job: Job
    value: Any = None
    failure: str = ""
    reason: str = ""
    seconds: float = 0.0


class _Starts:
    """When (here, time.monotonic()) and on which worker each job last started, from the event topic."""

    def __init__(self):
        self.seen: dict[str, tuple[float, str]] = {}

    def __call__(self, event: tuple[float, dict]) -> None:
        _, message = event
        self.seen[message["key"]] = (time.monotonic(), message["worker"])

    def elapsed(self, key: str, now: float | None = None) -> float:
        started = self.seen.get(key)
        return 0.0 if started is None else (now or time.monotonic()) - started[0]

    def worker(self, key: str) -> str | None:
        started = self.seen.get(key)
        return None if started is None else started[1]


def run_jobs(client, jobs: list[Job], options: ExecutorOptions = ExecutorOptions()) -> Iterator[Outcome]:
    """Run the jobs on the client's cluster and yield each one's outcome as it finishes, exactly once.
    Leaving early (an interrupt, or the caller stopping) cancels the jobs not finished."""
    starts, finished = _Starts(), queue.SimpleQueue()
    client.subscribe_topic(STARTED, starts)
    pending = {}
    try:
        for job in jobs:
            name = getattr(job.function, "__name__", "job")
            future = client.submit(announce_then, job.function, *job.args, key=f"{name}-{uuid.uuid4().hex}")
            future.add_done_callback(finished.put)
            pending[future] = job
        while pending:
            try:
                future = finished.get(timeout=options.poll)
            except queue.Empty:
                future = None
            if future is not None and future in pending:
                yield _outcome(pending.pop(future), future, starts)
            for future in _overstayed(client, pending, starts, options.grace):
                yield _stop(client, future, pending.pop(future), starts, options.grace)
    finally:
        if pending:
            client.cancel(list(pending))
        client.unsubscribe_topic(STARTED)


def announce_then(function: Callable, *args) -> Any:
    """On a worker: say on the STARTED topic that this job starts here, then run it."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(STARTED, {"key": worker.get_current_task(), "worker": worker.address})
    return function(*args)


def _outcome(job: Job, future, starts: _Starts) -> Outcome:
    """The outcome of a finished future: its value, or an `error` saying why there is none."""
    seconds = starts.elapsed(future.key)
    if future.status == "finished":
        return Outcome(job, future.result(), seconds=seconds)
    if future.status == "cancelled":
        return Outcome(job, failure="error", reason="cancelled on the cluster", seconds=seconds)
    return Outcome(job, failure="error", reason=_why(future.exception()), seconds=seconds)


def _why(error: BaseException) -> str:
    """One line on why a job failed: its worker died too often, or the exception it raised."""
    from distributed import KilledWorker

    if isinstance(error, KilledWorker):
        return (f"the worker running it died, {error.allowed_failures + 1} times in a row (Dask's KilledWorker): "
                "it may need more memory than a worker has")
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _overstayed(client, pending: dict, starts: _Starts, grace: float) -> list:
    """The pending futures whose job has run past its deadline and the grace on a worker still alive
    (one that died since does not count: the scheduler's retry announces its own start)."""
    now = time.monotonic()
    late = [future for future, job in pending.items()
            if job.seconds is not None and starts.elapsed(future.key, now) > job.seconds + grace]
    if not late:
        return []
    alive = set(client.nthreads())
    return [future for future in late if starts.worker(future.key) in alive]


def _stop(client, future, job: Job, starts: _Starts, grace: float) -> Outcome:
    """Cancel a job that overstayed, and restart its worker (a worker without a nanny is only shut down)."""
    seconds, worker = starts.elapsed(future.key), starts.worker(future.key)
    client.cancel([future])
    client.restart_workers([worker], raise_for_error=False)
    reason = f"ran {seconds:.0f} s, past its {job.seconds:g} s deadline and a {grace:g} s grace: its worker restarted"
    return Outcome(job, failure="timeout", reason=reason, seconds=seconds)
