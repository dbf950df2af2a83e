"""Branch and bound over a pool of worker processes (`bab` with `workers` > 1).

The property is cut into pieces that cover it: each region on its own, or, under ReLU splitting of
one region, the open domains of the search once it has a few per worker (relu_split.py). Every piece
is decided by the sequential branch and bound in a worker process, all against the same deadline.
The answer is `sat` as soon as one piece finds a confirmed counterexample (the pool is then
stopped), `unsat` when every piece is `unsat`, and otherwise the first piece's `timeout` / `unknown`:
the pieces cover the property, so nothing else is sound. (Input splitting deals its open sub-boxes
out again round after round instead: bab.py.) Inside `on_cluster(client)` the pool is a Dask cluster's
workers instead of local processes (verikit.scale.pool).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import os
from contextvars import ContextVar
from typing import Callable, Iterator

import torch

from verikit.graph import Graph
from verikit.verdict import Verdict
from verikit.spec.property import Property, RegionSpec

POOL_AFTER = 2.0  # seconds of search alone before workers start: most searches end sooner, and starting
WORKER_START = 1.5  # ... costs each worker a torch import (~1.5 s), during which this process searches on
AUTO_WORKERS_MAX = 16  # workers by default, at most (one a core up to this)

Split = Callable[[Graph, Property, RegionSpec, object, float], Verdict]
_CLUSTER: ContextVar[Callable[[], object] | None] = ContextVar("verikit_bab_cluster", default=None)


def decide_in_pool(graph: Graph, prop: Property, pieces: list[RegionSpec], split: Split, options,
                   deadline: float) -> Verdict:
    """Decide every region piece with `split` in `options.workers` processes (see the module doc)."""
    single = dataclasses.replace(options, workers=1)
    jobs = [functools.partial(split, graph, prop, piece, single, deadline) for piece in pieces]
    with start_pool(options.workers) as pool:
        return decide_jobs(pool, jobs, options.workers)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(device: str) -> int:
    """Workers when none are asked for: one a usable core, at most AUTO_WORKERS_MAX (each imports its own
    torch, ~0.25 GB); one on a GPU, which the bounding shares rather than splits."""
    return 1 if torch.device(device).type != "cpu" else min(usable_cores(), AUTO_WORKERS_MAX)


@contextlib.contextmanager
def on_cluster(client: Callable[[], object]) -> Iterator[None]:
    """Pools started inside the block are the cluster of the Dask client that `client()` gives (called
    when the first pool starts: verify --scheduler)."""
    token = _CLUSTER.set(client)
    try:
        yield
    finally:
        _CLUSTER.reset(token)


def start_pool(workers: int):
    """A pool of `workers` spawned processes, one torch thread each (they start importing at once), or,
    inside `on_cluster`, the cluster's workers."""
    if _CLUSTER.get() is not None:
        from verikit.scale.pool import DaskPool

        return DaskPool(_CLUSTER.get()())
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    return context.Pool(workers, initializer=_one_thread)


def decide_jobs(pool, jobs: list[Callable[[], Verdict]], workers: int) -> Verdict:
    """Run the jobs (picklable callables, each deciding one piece) in the pool; combine as the module
    doc says."""
    verdicts = []
    for verdict in pool.imap_unordered(run_job, jobs):
        if verdict.status == "sat":
            pool.terminate()
            return verdict
        verdicts.append(verdict)
    if all(v.status == "unsat" for v in verdicts):
        return Verdict("unsat", method="bab", detail=f"{len(jobs)} pieces in {workers} workers: "
                                                     + "; ".join(v.detail for v in verdicts[:3]))
    return next(v for v in verdicts if v.status != "unsat")


def run_job(job: Callable[[], object]) -> object:
    """Call a job (in a worker process: a module-level function, so the pool can pickle it)."""
    return job()


def _one_thread() -> None:
    torch.set_num_threads(1)
