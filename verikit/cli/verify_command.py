"""`verikit verify`: decide one instance, and report the verdict as text, JSON, a VNN-COMP result file,
a counterexample array and (with --exit-code) the exit status."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Iterator

import click

from verikit.cli.common import (EXIT_OK, EXIT_SAT, EXIT_UNSAT, console, device_option, handles_errors,
                                method_option, none_to_skip, options, seed_option, threads_option,
                                timeout_option, use_threads)

VERDICT_EXIT = {"sat": EXIT_SAT, "unsat": EXIT_UNSAT}  # --exit-code; unknown and timeout exit 0

# The methods of a verification, shared by `verify` and `run`.
pipeline_options = options(
    method_option("--method", "-m", "methods", multiple=True, role="bound",
                  help="Bound method to try (repeat for several, cheap to strong). Default: those of ibp, "
                       "crown, alpha-crown, group-dual that suit the model."),
    method_option("--attack", default="pgd", show_default=True, role="attack",
                  help="Attack method run first; 'none' to skip."),
    method_option("--complete", default="bab", show_default=True, role="complete",
                  help="Complete method run after the bounds, until the deadline; 'none' to skip."),
    seed_option,
    device_option,
    threads_option,
)


def scheduler_options(help: str):
    """--scheduler (a Dask cluster, verikit.scale) and --dashboard, with a command's own help text."""
    return options(
        click.option("--scheduler", help=help + " Needs `pip install 'verikit[dask]'`; README: Scale out."),
        click.option("--dashboard", is_flag=True, help="With --scheduler local[:N]: serve Dask's dashboard on "
                                                       "127.0.0.1:8787."),
    )


class StageLog:
    """The stages verify goes through, each with its start (seconds since the command started): shown
    on a spinner, printed as they start with --verbose, and listed in --json."""

    def __init__(self, echo: bool, status=None, label: str = ""):
        self.start, self.echo, self.status, self.label = time.monotonic(), echo, status, label
        self.stages: list[tuple[str, float]] = []

    def __call__(self, stage: str) -> None:
        elapsed = time.monotonic() - self.start
        self.stages.append((stage, elapsed))
        if self.echo:
            click.echo(f"{elapsed:8.2f} s  {stage}", err=True)
        if self.status is not None:
            self.status.update(f"{self.label}: {stage}")

    def timings(self) -> list[dict]:
        """[{"stage", "start", "seconds"}]: each stage lasts until the next starts (the last until now)."""
        ends = [start for _, start in self.stages[1:]] + [time.monotonic() - self.start]
        return [{"stage": stage, "start": round(start, 4), "seconds": round(end - start, 4)}
                for (stage, start), end in zip(self.stages, ends)]


@click.command(short_help="Decide one instance: unsat, sat (with a counterexample) or unknown.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("spec", type=click.Path(dir_okay=False))
@pipeline_options
@timeout_option(60.0, "Seconds for the whole instance (a number above 0).")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Processes for branch and bound: the open sub-boxes (input splitting), the "
                   "spec's regions, or the open domains of ReLU splitting are decided at once. "
                   "0: one per CPU core this process may use, up to 16 (1 with --device cuda); with "
                   "--scheduler, one per thread of the cluster's workers.")
@scheduler_options("Decide branch and bound's pieces on a Dask cluster's workers: local (one worker process "
                   "a core), local:N, or a scheduler's address such as tcp://host:8786.")
@click.option("--results", type=click.Path(dir_okay=False),
              help="Write a VNN-COMP result file here (an existing file is replaced, as VNN-COMP's tool "
                   "interface expects; never the model or the spec; its directory must exist).")
@click.option("--save-counterexample", "counterexample_path", type=click.Path(dir_okay=False),
              help="On sat, save the counterexample input as a float32 .npy array shaped like the model's "
                   "input (the input onnxruntime confirmed).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the verdict as one JSON object on stdout (README: Exit codes and JSON output).")
@click.option("--exit-code", is_flag=True,
              help=f"Exit with the verdict: {EXIT_SAT} sat, {EXIT_UNSAT} unsat, 0 unknown or timeout "
                   "(2 bad input, 1 internal error, as always).")
@click.option("--no-check", is_flag=True, help="Skip comparing the model with onnxruntime at load.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict.")
@click.option("--verbose", "-v", is_flag=True, help="Print each stage on stderr as it starts, with the time.")
@handles_errors
def verify(model, spec, methods, attack, complete, seed, device, timeout, workers, scheduler, dashboard, results,
           counterexample_path, as_json, exit_code, no_check, quiet, verbose) -> None:
    """Decide whether SPEC (VNN-LIB or YAML, describing the UNSAFE set) holds for the ONNX MODEL.

    Prints `unsat` (the property holds), `sat` (with a counterexample re-checked by onnxruntime),
    `unknown` or `timeout` as the last line, and exits 0 (see --exit-code).

    \b
    Example:
      verikit verify ACASXU_run2a_1_1_batch_2000.onnx prop_1.vnnlib --timeout 60 --results out.txt
      verikit verify net.onnx prop.vnnlib --json --save-counterexample x.npy
      verikit verify net.onnx prop.vnnlib --timeout 600 --scheduler tcp://10.0.0.5:8786
    """
    from verikit.results import check_output_path
    from verikit.roles import check_verify_methods

    use_threads()
    attack, complete = none_to_skip(attack), none_to_skip(complete)
    check_verify_methods(methods, attack, complete)
    if results:
        check_output_path(results, [model, spec], "--results")
    if counterexample_path:
        check_output_path(counterexample_path, [model, spec, *([results] if results else [])],
                          "--save-counterexample")
    if scheduler:
        from verikit.scale.cluster import check_scheduler

        check_scheduler(scheduler)
    with _bab_cluster(scheduler, dashboard) as cluster_workers:
        if workers == 0:
            from verikit.methods.bab_pool import default_workers

            workers = cluster_workers or default_workers(device)
        settings = dict(methods=tuple(methods) or None, attack=attack, complete=complete, device=device,
                        workers=workers, seed=seed, timeout=timeout)
        verdict, graph, log = _decide(model, spec, settings, no_check, results,
                                      show_spinner=not (quiet or verbose or as_json), verbose=verbose)
    if counterexample_path:
        _save_counterexample(counterexample_path, verdict, graph)
    if as_json:
        click.echo(json.dumps(verdict_record(verdict, graph, log, model, spec)))
    else:
        _print_verdict(verdict, quiet)
    if exit_code:
        raise SystemExit(VERDICT_EXIT.get(verdict.status, EXIT_OK))


@contextlib.contextmanager
def _bab_cluster(scheduler: str | None, dashboard: bool) -> Iterator[int]:
    """Inside, branch and bound's pools are the Dask cluster of `scheduler` (none: local processes),
    a local one started only when branch and bound first wants workers; gives the threads of its
    workers (0 without one)."""
    if not scheduler:
        yield 0
        return
    from verikit.methods.bab_pool import on_cluster
    from verikit.scale.cluster import ClusterOptions, LazyClient, check_scheduler, cluster_threads

    cluster = LazyClient(ClusterOptions(scheduler, dashboard))
    try:
        threads = check_scheduler(scheduler).workers or cluster_threads(cluster.get())
        with on_cluster(cluster.get):
            yield threads
    finally:
        cluster.close()


def _decide(model: str, spec: str, settings: dict, no_check: bool, results: str | None, show_spinner: bool,
            verbose: bool):
    """Load the model and spec, run the pipeline, write the result file (`error` where loading failed).
    Returns the verdict, the graph and the stage log."""
    from verikit.api import load_model, load_spec
    from verikit.errors import VerikitError
    from verikit.methods.base import Verdict
    from verikit.pipeline import VerifyOptions, verify as run_verify
    from verikit.results import write_result

    spinner = console().status("loading model", spinner="dots") if show_spinner else contextlib.nullcontext()
    try:
        with spinner as status:
            log = StageLog(echo=verbose, status=status, label=Path(model).name)
            log("load model and spec")
            graph = load_model(model, check=not no_check)
            prop = load_spec(spec, graph)
            verdict = run_verify(graph, prop, VerifyOptions(**settings), progress=log)
    except VerikitError:
        if results:
            write_result(results, Verdict("error"))
        raise
    if results:
        write_result(results, verdict)
    return verdict, graph, log


def verdict_record(verdict, graph, log: StageLog, model: str, spec: str) -> dict:
    """The --json object: the verdict, how it was reached, and the counterexample as flat lists."""
    counterexample = None
    if verdict.counterexample is not None:
        x, y = verdict.counterexample
        counterexample = {"input": [float(v) for v in x.reshape(-1)], "output": [float(v) for v in y.reshape(-1)],
                          "input_shape": list(graph.input_shape)}
    return {"status": verdict.status, "method": verdict.method, "seconds": round(verdict.seconds, 4),
            "detail": verdict.detail, "model": model, "spec": spec, "counterexample": counterexample,
            "stages": log.timings()}


def _save_counterexample(path: str, verdict, graph) -> None:
    """Save a sat verdict's input as float32, shaped like the model's input; say so when there is none."""
    if verdict.counterexample is None:
        click.echo(f"note: no counterexample ({verdict.status}): {path} not written", err=True)
        return
    import io

    import numpy as np

    from verikit.results import write_atomically

    buffer = io.BytesIO()
    np.save(buffer, verdict.counterexample[0].numpy().astype(np.float32).reshape(graph.input_shape))
    write_atomically(path, buffer.getvalue())


def _print_verdict(verdict, quiet: bool) -> None:
    """A summary on stderr and the counterexample block (unless --quiet), then the verdict, last, on stdout."""
    from verikit.results import format_result

    if not quiet:
        decided = f" by {verdict.method}" if verdict.method else ""
        console().print(f"{verdict.status}{decided} in {verdict.seconds:.2f} s"
                        + (f" ({verdict.detail})" if verdict.detail else ""))
        if verdict.status == "sat":
            click.echo(format_result(verdict).split("\n", 1)[1].rstrip())
    click.echo(verdict.status)
