"""Run a comparison's measurements, here, in worker processes or on a Dask cluster (one torch thread
each), appending their records to DIR as each finishes; measurements already recorded there are
skipped (resume). On a cluster the workers read the models and specs at the paths the set names."""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable

from verikit.compare.records import Record, RecordWriter, done_keys, read_records
from verikit.compare.tasks import Task


def pending(tasks: list[Task], out: str | Path) -> list[Task]:
    """The tasks whose measurement DIR does not hold yet, each once, in order."""
    done, seen, todo = done_keys(read_records(out)), set(), []
    for task in tasks:
        if task.key() not in done and task.key() not in seen:
            seen.add(task.key())
            todo.append(task)
    return todo


def run_tasks(tasks: list[Task], out: str | Path, workers: int = 1, limit: int | None = None,
              on_records: Callable[[list[Record]], None] | None = None, scheduler: str | None = None) -> list[Record]:
    """Measure the tasks not yet in DIR (at most `limit` of them), appending their records; returns
    every record of DIR. Bounds are the same with any number of workers: each runs one torch thread.
    `scheduler`: a Dask cluster instead of `workers` (verikit.scale.cluster)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = pending(tasks, out)[:limit]
    with RecordWriter(out) as writer:
        for records in (_on_cluster(todo, scheduler) if scheduler else _execute(todo, workers)):
            writer.write(records)
            if on_records is not None:
                on_records(records)
    return read_records(out)


def _one_thread() -> None:
    """Each process computes on one torch thread: a serial run and a parallel one give the same numbers."""
    import torch

    os.environ["VERIKIT_THREADS"] = "1"
    torch.set_num_threads(1)


def measure_on_one_thread(task: Task) -> list[Record]:
    """On a worker: the task's records, computed on one torch thread."""
    from verikit.compare.measure import measure

    _one_thread()
    return measure(task)


def _on_cluster(todo: list[Task], scheduler: str) -> Iterable[list[Record]]:
    """The records of each task as it finishes on the Dask cluster; a verdicts task whose worker overstays
    its timeout by the grace is recorded as `timeout`, one the cluster cannot finish as an error."""
    from verikit.scale.cluster import ClusterOptions, connect
    from verikit.scale.executor import Job, run_jobs

    with connect(ClusterOptions(scheduler)) as client:
        jobs = [Job(measure_on_one_thread, (task,), task.timeout if task.mode == "verdicts" else None)
                for task in todo]
        for outcome in run_jobs(client, jobs):
            yield outcome.value if not outcome.failure else [_unfinished(outcome.job.args[0], outcome)]


def _unfinished(task: Task, outcome) -> Record:
    """The record of a task the cluster did not finish: `timeout` (verdicts) or the error's reason."""
    from verikit.compare.records import environment

    record = Record(task.mode, task.recorded_model, task.recorded_spec, task.norm, task.eps, task.method.label,
                    label=task.label, options=task.method.options_json(), seconds=round(outcome.seconds, 6),
                    **environment())
    if outcome.failure == "timeout" and task.mode == "verdicts":
        return dataclasses.replace(record, verdict="timeout")
    return dataclasses.replace(record, error=outcome.reason)


def _execute(todo: list[Task], workers: int) -> Iterable[list[Record]]:
    """The records of each task as it finishes; an interrupt terminates the workers at once."""
    from verikit.compare.measure import measure

    if workers <= 1 or len(todo) <= 1:
        _one_thread()
        for task in todo:
            yield measure(task)
        return
    from verikit.suite import _terminate_workers

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread)
    try:
        futures = [pool.submit(measure, task) for task in todo]
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        _terminate_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
