"""Run a comparison's measurements, here or in worker processes (one torch thread each), appending
their records to DIR as each finishes; measurements already recorded there are skipped (resume)."""
from __future__ import annotations

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
              on_records: Callable[[list[Record]], None] | None = None) -> list[Record]:
    """Measure the tasks not yet in DIR (at most `limit` of them), appending their records; returns
    every record of DIR. Bounds are the same with any number of workers: each runs one torch thread."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = pending(tasks, out)[:limit]
    with RecordWriter(out) as writer:
        for records in _execute(todo, workers):
            writer.write(records)
            if on_records is not None:
                on_records(records)
    return read_records(out)


def _one_thread() -> None:
    """Each process computes on one torch thread: a serial run and a parallel one give the same numbers."""
    import torch

    os.environ["VERIKIT_THREADS"] = "1"
    torch.set_num_threads(1)


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
