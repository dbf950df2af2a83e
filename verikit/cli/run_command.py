"""`verikit run`: verify every instance of a suite, appending to a resumable results CSV (and JSON lines),
then summarise; the exit code says whether any instance errored or contradicted its expected verdict."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from verikit.cli.common import (EXIT_CONTRADICTION, EXIT_INSTANCE_ERRORS, Seconds, console, fail, handles_errors,
                                none_to_skip, use_threads)
from verikit.cli.verify_command import pipeline_options, scheduler_options


@click.command(short_help="Verify every instance of a suite CSV and summarise the results.")
@click.argument("suite", type=click.Path(dir_okay=False))
@click.option("--out", default="results.csv", show_default=True, type=click.Path(dir_okay=False),
              help="Results CSV; instances already in it are skipped (resumable). Checked before the first "
                   "instance runs: not the suite, in an existing directory, new or written by `verikit run`.")
@click.option("--retry-errors", is_flag=True, help="Run again the instances whose row in --out is `error`.")
@click.option("--jsonl", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also append one JSON object a line per instance to this file as each finishes ('-': stdout).")
@click.option("--results-dir", type=click.Path(file_okay=False),
              help="Write one VNN-COMP result file per instance here (created if missing).")
@click.option("--timeout-cap", type=Seconds(), help="At most this many seconds an instance (default: the csv's).")
@pipeline_options
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Local worker processes (one instance each).")
@scheduler_options("Run the instances on a Dask cluster instead: local (one worker process a core), local:N, "
                   "or a scheduler's address such as tcp://host:8786.")
@click.option("--grace", default=30.0, show_default=True, type=Seconds(),
              help="With --scheduler: seconds past an instance's timeout before its worker is restarted and the "
                   "instance recorded as `timeout`.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N instances.")
@handles_errors
def run(suite, out, retry_errors, jsonl, results_dir, timeout_cap, methods, attack, complete, seed, device, workers,
        scheduler, dashboard, grace, limit) -> None:
    """Verify every instance of a SUITE csv (VNN-COMP `onnx,vnnlib,timeout` rows, or an instances.csv
    with a header naming onnx, vnnlib, timeout_s and an `expected` column) and summarise verdicts, times
    and agreement with the expected answers.

    Exits 0 when every instance got a verdict, 3 when one contradicts its expected answer, 4 when one
    ended in `error` (its detail column says why).

    \b
    Example:
      verikit run ../shared/benchmarks/acasxu/instances.csv --timeout-cap 30 --out acas.csv
      verikit run suite.csv --out suite.csv.out --jsonl - --retry-errors
      verikit run ../shared/benchmarks/acasxu/instances.csv --scheduler local:2 --out acas.csv
    """
    from verikit.results import check_output_path
    from verikit.roles import check_verify_methods
    from verikit.suite import SuiteOptions, check_out_csv, read_instances

    use_threads()
    attack, complete = none_to_skip(attack), none_to_skip(complete)
    check_verify_methods(methods, attack, complete)
    if scheduler:
        from verikit.errors import VerikitError
        from verikit.scale.cluster import check_scheduler

        check_scheduler(scheduler)
        if workers > 1:
            raise VerikitError("--workers and --scheduler both say where instances run", place="--workers",
                               fix="give one of them (local:N runs N worker processes on a local Dask cluster)")
    instances = read_instances(suite)[:limit]
    check_out_csv(out, suite)
    if jsonl and jsonl != "-":
        check_output_path(jsonl, [suite, out], "--jsonl")
    options = SuiteOptions(timeout_cap=timeout_cap, methods=tuple(methods) or None, attack=attack,
                           complete=complete, workers=workers, results_dir=Path(results_dir) if results_dir else None,
                           scheduler=scheduler, grace=grace, dashboard=dashboard, device=device, seed=seed)
    _run_with_progress(instances, suite, out, options, retry_errors, jsonl)
    _summarise(out)


def _run_with_progress(instances: list, suite: str, out: str, options, retry_errors: bool, jsonl: str | None) -> None:
    """Run the suite under a progress bar (stderr), one line per finished instance."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from verikit.suite import done_instances, run_suite

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console()) as progress, _json_lines(jsonl) as write_line:
        task = progress.add_task(Path(suite).parent.name or "suite", total=len(instances))
        already = done_instances(Path(out), retry_errors)
        progress.update(task, completed=sum((i.onnx, i.vnnlib) in already for i in instances))

        def advance(record: dict) -> None:
            name = f"{Path(record['onnx']).stem} {Path(record['vnnlib']).stem}"
            contradiction = "  CONTRADICTS expected " + record["expected"] if record["agreement"] == "no" else ""
            progress.console.print(f"{record['verdict']:>8} {float(record['seconds']):7.2f} s  {name}{contradiction}")
            write_line(record)
            progress.advance(task)

        run_suite(instances, out, options, on_result=advance, retry_errors=retry_errors)


@contextlib.contextmanager
def _json_lines(target: str | None):
    """A function writing one instance's record as a JSON line to `target` (a file appended to, '-' for
    stdout, None for nowhere), flushed at once so a reader can follow it."""
    if target is None:
        yield lambda record: None
        return
    with (contextlib.nullcontext(sys.stdout) if target == "-" else open(target, "a", encoding="utf-8")) as handle:
        def write(record: dict) -> None:
            handle.write(json.dumps({**record, "seconds": float(record["seconds"])}) + "\n")
            handle.flush()

        yield write


def _summarise(out: str) -> None:
    """The summary table of the whole results CSV (stderr), and the exit code it calls for."""
    from rich.table import Table

    from verikit.suite import summarize

    summary = summarize(out)
    table = Table("verdict", "count", title=f"{summary['instances']} instances, {summary['seconds']:.1f} s")
    for verdict, count in sorted(summary["counts"].items()):
        table.add_row(verdict, str(count))
    table.add_row("contradictions", str(len(summary["contradictions"])))
    console().print(table)
    if summary["contradictions"]:
        fail(f"{len(summary['contradictions'])} verdict(s) contradict the expected answer (see {out})",
             EXIT_CONTRADICTION)
    if summary["errors"]:
        fail(f"{len(summary['errors'])} instance(s) ended in error: the detail column of {out} says why; "
             "--retry-errors runs them again", EXIT_INSTANCE_ERRORS)
