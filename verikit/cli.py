"""The `verikit` command line. Every command has --help with an example, --debug for tracebacks, and
exits non-zero on error (2 for bad input, 1 for an internal failure)."""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import sys
import warnings
from pathlib import Path

import click

from verikit.errors import VerikitError

EXIT_BAD_INPUT = 2


def _console():
    from rich.console import Console

    return Console(stderr=True)


def handles_errors(command):
    """Print a VerikitError as one clear message (no traceback unless --debug) and exit non-zero."""

    @click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
    @functools.wraps(command)
    def wrapper(*args, debug: bool = False, **kwargs):
        try:
            return command(*args, **kwargs)
        except VerikitError as error:
            if debug:
                raise
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as error:  # an internal bug: say so plainly
            if debug:
                raise
            click.echo(f"internal error: {type(error).__name__}: {error}\n  (run again with --debug for the "
                       "traceback, and please report it)", err=True)
            sys.exit(1)

    return wrapper


def _check_device(context, parameter, value: str) -> str:
    """`cpu`, or a CUDA device that torch can see (checked before any work starts)."""
    if value == "cpu":
        return value
    import torch

    if not value.startswith("cuda") or not torch.cuda.is_available():
        raise click.BadParameter(f"{value!r} is not available here (torch sees no CUDA GPU); use --device cpu")
    return value


device_option = click.option(
    "--device", default="cpu", show_default=True, callback=_check_device,
    help="Where bounds and branch and bound run: cpu, or cuda for a GPU (attacks and LP leaves stay on the CPU).")


def use_threads() -> None:
    """Set torch's CPU threads from VERIKIT_THREADS (default 1: the small networks of verification
    run fastest single-threaded, and suites run one process per core instead); resume garbage
    collection with what start-up imported frozen (later collections need not walk it)."""
    import os

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("VERIKIT_THREADS", "1"))))
    gc.freeze()
    gc.enable()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="verikit")
@click.option("--threads", type=int, envvar="VERIKIT_THREADS", default=1, show_default=True,
              help="torch CPU threads per process (also VERIKIT_THREADS).")
def main(threads: int) -> None:
    """verikit: prove or refute properties of neural networks.

    \b
    Examples:
      verikit verify net.onnx prop.vnnlib --timeout 60 --results out.txt
      verikit bound net.onnx prop.vnnlib --method crown
      verikit run ../shared/benchmarks/acasxu/instances.csv --timeout-cap 30 --out acas.csv
      verikit radius net.onnx --input x.npy --label 3 --norm 2 --method cnn-cert
      verikit plugins
    """
    import os

    os.environ["VERIKIT_THREADS"] = str(threads)
    warnings.formatwarning = lambda message, *_: f"warning: {message}\n"  # one line, no source excerpt
    # Start-up: torch's import leaves a large heap, and each full garbage collection over it costs ~70 ms
    # here. Collections wait until a command's imports are done (`use_threads` freezes that heap).
    gc.disable()
    click.get_current_context().call_on_close(gc.enable)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--method", "-m", "methods", multiple=True,
              help="Bound method to try (repeat for several, cheap to strong). Default: the registered ones "
                   "of ibp, crown, alpha-crown, group-dual that suit the model.")
@click.option("--attack", default="pgd", show_default=True, help="Attack method; 'none' to skip.")
@click.option("--complete", default="bab", show_default=True,
              help="Complete method run after the bounds, until the deadline; 'none' to skip.")
@click.option("--timeout", default=60.0, show_default=True, type=float, help="Seconds for the whole instance.")
@click.option("--results", type=click.Path(dir_okay=False), help="Write a VNN-COMP result file here.")
@click.option("--no-check", is_flag=True, help="Skip comparing the model with onnxruntime at load.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Processes for branch and bound: the open sub-boxes (input splitting), the "
                   "spec's regions, or the open domains of ReLU splitting are decided at once. "
                   "0: one per CPU core this process may use, up to 16 (1 with --device cuda).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the attacks' random starts: the same seed repeats the same search (up to where "
                   "the timeout cuts it).")
@device_option
@handles_errors
def verify(model, spec, methods, attack, complete, timeout, results, no_check, quiet, workers, seed,
           device) -> None:
    """Decide whether SPEC (VNN-LIB or YAML, describing the UNSAFE set) holds for the ONNX MODEL.

    Prints `unsat` (the property holds), `sat` (with a counterexample re-checked by onnxruntime),
    `unknown` or `timeout` as the last line.

    \b
    Example:
      verikit verify ACASXU_run2a_1_1_batch_2000.onnx prop_1.vnnlib --timeout 60 --results out.txt
    """
    from verikit.api import load_model, load_spec
    from verikit.methods.base import Verdict
    from verikit.results import format_result, write_result
    from verikit.pipeline import VerifyOptions, verify as run_verify

    use_threads()
    if workers == 0:
        from verikit.methods.bab_pool import default_workers

        workers = default_workers(device)
    console = None if quiet else _console()  # rich costs start-up: not loaded for --quiet
    try:
        with (console.status("loading model", spinner="dots") if console else contextlib.nullcontext()) as status:
            graph = load_model(model, check=not no_check)
            prop = load_spec(spec, graph)
            options = VerifyOptions(timeout=timeout, methods=tuple(methods) or None,
                                    attack=None if attack == "none" else attack,
                                    complete=None if complete == "none" else complete, device=device,
                                    workers=workers, seed=seed)
            update = (lambda stage: status.update(f"{Path(model).name}: {stage}")) if console else None
            verdict = run_verify(graph, prop, options, progress=update)
    except VerikitError:
        if results:
            write_result(results, Verdict("error"))
        raise
    if results:
        write_result(results, verdict)
    if console:
        decided = f" by {verdict.method}" if verdict.method else ""
        console.print(f"{verdict.status}{decided} in {verdict.seconds:.2f} s"
                      + (f" ({verdict.detail})" if verdict.detail else ""))
        if verdict.status == "sat":
            click.echo(format_result(verdict).split("\n", 1)[1].rstrip())
    click.echo(verdict.status)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--method", "-m", default="ibp", show_default=True, help="Bound method.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handles_errors
def bound(model, spec, method, as_json) -> None:
    """Bounds of every row `c . y - d` of SPEC's unsafe clauses on MODEL (a positive lower bound refutes
    the row's clause).

    \b
    Example:
      verikit bound net.onnx prop.vnnlib --method ibp --json
    """
    from verikit.api import bound as compute, load_model, load_spec

    use_threads()
    graph = load_model(model)
    prop = load_spec(spec, graph)
    results = compute(graph, prop, method=method)
    records = []
    for region_index, (spec_region, interval) in enumerate(zip(prop.regions, results)):
        row = 0
        for clause_index, clause in enumerate(spec_region.clauses):
            for _ in range(clause.coefficients.shape[0]):
                records.append({"region": region_index, "clause": clause_index, "row": row,
                                "lower": float(interval.lower[0, row]), "upper": float(interval.upper[0, row])})
                row += 1
    if as_json:
        click.echo(json.dumps({"method": method, "rows": records}, indent=2))
        return
    from rich.table import Table

    table = Table("region", "clause", "row", "lower", "upper", "refutes", title=f"{method} bounds of c.y - d")
    for r in records:
        table.add_row(str(r["region"]), str(r["clause"]), str(r["row"]), f"{r['lower']:.6g}",
                      f"{r['upper']:.6g}", "yes" if r["lower"] > 0 else "")
    _console().print(table)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="The clean input as a .npy array (any shape with the model's number of entries).")
@click.option("--label", required=True, type=int, help="The class the input must keep.")
@click.option("--target", type=int, help="Only this adversarial class (default: every other class).")
@click.option("--norm", type=click.Choice(["inf", "2", "1"]), default="inf", show_default=True)
@click.option("--method", "-m", default="cnn-cert", show_default=True, help="Bound method used to certify.")
@click.option("--domain", nargs=2, type=float, help="Clip the ball to [LOW, HIGH] per input, e.g. --domain 0 1.")
@click.option("--steps", default=15, show_default=True, help="Binary-search steps (log space, from 0.05).")
@click.option("--no-attack", is_flag=True, help="Skip the attack's upper bound.")
@handles_errors
def radius(model, input_path, label, target, norm, method, domain, steps, no_attack) -> None:
    """Certified lower bound on the minimum adversarial distortion around an input (CNN-Cert's
    log-space binary search), with the smallest distortion the PGD attack finds as an upper bound.

    \b
    Example:
      verikit radius net.onnx --input x.npy --label 3 --norm inf --method crown --domain 0 1
    """
    import numpy as np
    import torch

    from verikit.api import load_model
    from verikit.radius import certified_radius

    use_threads()
    graph = load_model(model)
    try:
        x0 = torch.from_numpy(np.load(input_path)).double().reshape(-1)
    except (OSError, ValueError) as error:
        raise VerikitError(f"cannot read the input array: {error}", path=input_path,
                           fix="save it with numpy.save(path, array)") from None
    if x0.numel() != graph.input_size:
        raise VerikitError(f"the input has {x0.numel()} entries but the model takes {graph.input_size}",
                           path=input_path, fix=f"give an array of shape {list(graph.input_shape)}")
    for name, value in (("label", label), ("target", target)):
        if value is not None and not 0 <= value < graph.output_size:
            raise VerikitError(f"--{name} {value} is not a class of a model with {graph.output_size} outputs",
                               fix=f"use 0..{graph.output_size - 1}")
    result = certified_radius(graph, x0, label, target, norm, method, domain=tuple(domain) if domain else None,
                              steps=steps, attack=not no_attack)
    from rich.table import Table

    table = Table("quantity", "value", title=f"L{norm} radius around {Path(input_path).name}, label {label}")
    table.add_row(f"certified ({method})", f"{result.certified:.6g}")
    table.add_row("upper bracket (did not certify)", f"{result.upper_bracket:.6g}")
    table.add_row("attack radius (misclassified)", f"{result.attack_radius:.6g}" if not no_attack else "-")
    table.add_row("seconds (certify / attack)", f"{result.seconds:.2f} / {result.attack_seconds:.2f}")
    _console().print(table)
    if result.upper_bracket == 0.0:
        _console().print(f"note: the model does not classify the input as {label} (radius 0)")
    click.echo(f"{result.certified:.6g}")


@main.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.option("--out", default="results.csv", show_default=True, type=click.Path(dir_okay=False),
              help="Results CSV; instances already in it are skipped (resumable).")
@click.option("--results-dir", type=click.Path(file_okay=False), help="Write one VNN-COMP result file per instance here.")
@click.option("--timeout-cap", type=float, help="At most this many seconds an instance (default: the csv's).")
@click.option("--method", "-m", "methods", multiple=True, help="Bound methods, as for verify.")
@click.option("--attack", default="pgd", show_default=True, help="Attack method; 'none' to skip.")
@click.option("--complete", default="bab", show_default=True, help="Complete method; 'none' to skip.")
@click.option("--workers", default=1, show_default=True, help="Local worker processes (one instance each).")
@click.option("--scheduler", help="Address of a Dask distributed scheduler to run instances on instead.")
@click.option("--limit", type=int, help="Only the first N instances.")
@device_option
@handles_errors
def run(suite, out, results_dir, timeout_cap, methods, attack, complete, workers, scheduler, limit, device) -> None:
    """Verify every instance of a SUITE csv (VNN-COMP `onnx,vnnlib,timeout` rows, or an instances.csv
    with an `expected` column) and summarise verdicts, times and agreement with the expected answers.

    \b
    Example:
      verikit run ../shared/benchmarks/acasxu/instances.csv --timeout-cap 30 --out acas.csv
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from verikit.suite import SuiteOptions, done_instances, read_instances, run_suite, summarize

    use_threads()
    instances = read_instances(suite)[:limit]
    options = SuiteOptions(timeout_cap=timeout_cap, methods=tuple(methods) or None,
                           attack=None if attack == "none" else attack,
                           complete=None if complete == "none" else complete, workers=workers,
                           results_dir=Path(results_dir) if results_dir else None, scheduler=scheduler,
                           device=device)
    console = _console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(Path(suite).parent.name or "suite", total=len(instances))
        already = done_instances(Path(out))
        progress.update(task, completed=sum((i.onnx, i.vnnlib) in already for i in instances))

        def advance(record: dict) -> None:
            name = f"{Path(record['onnx']).stem} {Path(record['vnnlib']).stem}"
            progress.console.print(f"{record['verdict']:>8} {float(record['seconds']):7.2f} s  {name}"
                                   + ("  CONTRADICTS expected " + record["expected"] if record["agreement"] == "no" else ""))
            progress.advance(task)

        run_suite(instances, out, options, on_result=advance)
    summary = summarize(out)
    from rich.table import Table

    table = Table("verdict", "count", title=f"{summary['instances']} instances, {summary['seconds']:.1f} s")
    for verdict, count in sorted(summary["counts"].items()):
        table.add_row(verdict, str(count))
    table.add_row("contradictions", str(len(summary["contradictions"])))
    console.print(table)
    if summary["contradictions"]:
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handles_errors
def plugins(as_json) -> None:
    """List every registered layer, method, trainer and spec-reader plugin, and where it came from.

    \b
    Example:
      verikit plugins
      VERIKIT_PLUGINS= verikit plugins     # built-ins only
    """
    from verikit.plugins import registry

    rows: dict[tuple[str, str, str], list[str]] = {}
    for entry in registry().all():
        rows.setdefault((entry.plugin, entry.kind, entry.distribution), []).append(entry.name)
    if as_json:
        click.echo(json.dumps([{"plugin": p, "kind": k, "distribution": d, "provides": sorted(n)}
                               for (p, k, d), n in sorted(rows.items())], indent=2))
        return
    from rich.table import Table

    table = Table("plugin", "kind", "provides", "distribution", title="verikit plugins")
    for (plugin, kind, distribution), names in sorted(rows.items(), key=lambda r: (r[0][1], r[0][0])):
        table.add_row(plugin, kind, ", ".join(sorted(names)), distribution)
    from rich.console import Console

    Console(width=max(100, Console().width)).print(table)


if __name__ == "__main__":
    main()
