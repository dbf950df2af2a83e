"""A suite's instances as tasks on a Dask cluster (`verikit run --scheduler`).

What crosses the wire: each model's and spec's bytes once (verikit.scale.files), each instance and the
suite's options, and back each instance's results row and result-file text; result files are written
here, so workers need neither the client's files nor its disk. An instance that overstays its timeout
by the grace is recorded as `timeout`, one whose worker died past the allowed failures (or that
raised) as `error` with the reason (verikit.scale.executor).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

from verikit.scale.cluster import ClusterOptions, connect
from verikit.scale.executor import ExecutorOptions, Job, Outcome, run_jobs
from verikit.scale.files import FileStore, Shipped, cached_model, spec_from_bytes
from verikit.suite import Instance, SuiteOptions, decide_instance, instance_record, instance_timeout, result_name


def run_on_cluster(todo: list[Instance], options: SuiteOptions) -> Iterator[dict]:
    """The results rows of the instances as they finish on options.scheduler's cluster (one each)."""
    from verikit.results import write_atomically

    with connect(ClusterOptions(options.scheduler, options.dashboard)) as client:
        store = FileStore(client)
        store.ship([path for instance in todo for path in (instance.onnx, instance.vnnlib)])
        remote = dataclasses.replace(options, results_dir=None)
        jobs = [Job(decide_remotely, (instance, remote, *store.get(instance.onnx), *store.get(instance.vnnlib)),
                    seconds=instance_timeout(instance, options)) for instance in todo]
        for outcome in run_jobs(client, jobs, ExecutorOptions(grace=options.grace)):
            instance = outcome.job.args[0]
            record, text = _row_and_result(instance, outcome)
            if options.results_dir is not None:
                write_atomically(Path(options.results_dir) / result_name(instance), text)
            yield record


def decide_remotely(instance: Instance, options: SuiteOptions, model: Shipped | None, model_data: bytes | None,
                    spec: Shipped | None, spec_data: bytes | None) -> tuple[dict, str]:
    """On a worker: decide the instance from the shipped bytes; its results row and result-file text."""
    from verikit.results import format_result

    def load():
        graph = cached_model(instance.onnx, model, model_data)
        return graph, spec_from_bytes(instance.vnnlib, spec, spec_data, graph)

    record, verdict = decide_instance(instance, options, load)
    return record, format_result(verdict)


def _row_and_result(instance: Instance, outcome: Outcome) -> tuple[dict, str]:
    """The results row and result-file text of a finished job, or of one the cluster could not finish."""
    if not outcome.failure:
        return outcome.value
    from verikit.methods.base import Verdict
    from verikit.results import format_result

    verdict = Verdict(outcome.failure, detail=outcome.reason)
    return instance_record(instance, verdict, outcome.seconds), format_result(verdict)
