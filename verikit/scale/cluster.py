"""The Dask cluster a command runs on: `local` / `local:N` (a LocalCluster of N worker processes on this
machine, one thread each, listening on loopback only) or the address of a running scheduler."""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Iterator

from verikit.errors import VerikitError

SCHEDULER_HINT = "local, local:N (N worker processes on this machine) or a scheduler's address (tcp://host:8786)"
EXTRA_FIX = "pip install 'verikit[dask]' (Dask distributed), or leave --scheduler out"
LOCAL_ALLOWED_FAILURES = 1  # a local cluster retries a task whose worker died once, then reports KilledWorker
CONNECT_SECONDS = 10  # to reach a scheduler
WORKERS_SECONDS = 30  # for a scheduler without workers to get one


@dataclass(frozen=True)
class ClusterOptions:
    """scheduler: as SCHEDULER_HINT says; dashboard: serve a local cluster's dashboard on 127.0.0.1:8787
    (off by default)."""

    scheduler: str
    dashboard: bool = False


@dataclass(frozen=True)
class Scheduler:
    """A parsed --scheduler: the number of local worker processes to start, or a scheduler's address."""

    workers: int | None = None
    address: str | None = None


def check_scheduler(text: str) -> Scheduler:
    """The --scheduler value parsed, once Dask distributed is known to be installed (one clear error
    naming the extra where it is not, and one for a value that is no scheduler)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise VerikitError("--scheduler runs on Dask distributed, which is not installed", place="--scheduler",
                           fix=EXTRA_FIX) from None
    text = text.strip()
    if text == "local":
        from verikit.methods.bab_pool import usable_cores

        return Scheduler(workers=usable_cores())
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise VerikitError(f"bad worker count {count!r} in {text!r}", place="--scheduler",
                               fix="write local:N, N a whole number above 0")
        return Scheduler(workers=int(count))
    if "://" in text or re.fullmatch(r"[\w.-]+:\d+", text):
        return Scheduler(address=text)
    raise VerikitError(f"{text!r} is not a scheduler", place="--scheduler", fix=f"give {SCHEDULER_HINT}")


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator:
    """A Dask client of the cluster; when the block ends (an interrupt included) the client closes, and
    a local cluster stops its workers."""
    from distributed import Client

    scheduler = check_scheduler(options.scheduler)
    if scheduler.address:
        client = _reach(scheduler.address)
        try:
            client.run(import_engines, wait=False)
            yield client
        finally:
            client.close()
        return
    cluster = start_local_cluster(scheduler.workers, options.dashboard)
    try:
        with Client(cluster) as client:
            client.run(import_engines, wait=False)
            yield client
    finally:
        cluster.close()


class LazyClient:
    """A client connected on first use: a local cluster's start costs seconds (and, on a small machine,
    the cores its workers import on), which a `verify` decided before branch and bound wants workers
    never pays; `close` ends what was started."""

    def __init__(self, options: ClusterOptions):
        self.options, self.client, self.stack = options, None, contextlib.ExitStack()

    def get(self):
        if self.client is None:
            self.client = self.stack.enter_context(connect(self.options))
        return self.client

    def close(self) -> None:
        self.stack.close()


def start_local_cluster(workers: int, dashboard: bool = False):
    """A LocalCluster of `workers` processes with one thread each, on 127.0.0.1, that retries a task
    whose worker died LOCAL_ALLOWED_FAILURES time(s), hands a worker its next task only when it is
    free (the last pieces of a round go to whichever worker finishes first), and leaves glibc's
    malloc trimming at its default (the nanny's aggressive one slows torch's allocations)."""
    import dask
    from distributed import LocalCluster

    environment = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environment.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.scheduler.allowed-failures": LOCAL_ALLOWED_FAILURES,
                          "distributed.scheduler.worker-saturation": 1.0,
                          "distributed.nanny.pre-spawn-environ": environment}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address="127.0.0.1:8787" if dashboard else None,
                            silence_logs=logging.CRITICAL)


def _reach(address: str):
    """A client of the running scheduler at `address`, once it has a worker (one clear error if not)."""
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_SECONDS)
    except OSError as error:
        raise VerikitError(f"cannot reach a Dask scheduler at {address} ({error})", place="--scheduler",
                           fix="start one with `dask scheduler` (README: Scale out), or give --scheduler local:N"
                           ) from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_SECONDS)
    except TimeoutError:
        client.close()
        raise VerikitError(f"the Dask scheduler at {address} has no worker", place="--scheduler",
                           fix=f"start one: dask worker {address} --nthreads 1 (README: Scale out)") from None
    return client


def cluster_threads(client) -> int:
    """The threads of every worker the client's scheduler has now (the tasks it runs at once)."""
    return sum(client.nthreads().values())


def set_threads() -> None:
    """torch's threads in this process: VERIKIT_THREADS of its environment, default 1 (a worker process
    started with `--nthreads 1` then computes on one core, as the small networks of verification like)."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("VERIKIT_THREADS", "1"))))


async def import_engines() -> None:
    """Import torch and verikit's verification on a worker, in a thread of its own, before its first task
    needs them (run at connection: the imports overlap the client's own start)."""
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, _import_engines)


def _import_engines() -> None:
    import verikit.api  # noqa: F401
    import verikit.methods.bab  # noqa: F401
    import verikit.onnx_import  # noqa: F401
    import verikit.pipeline  # noqa: F401

    set_threads()
