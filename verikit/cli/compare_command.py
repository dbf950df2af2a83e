"""`verikit compare`: bound methods (and other verifiers' imported results) side by side over a
benchmark set; records, a summary table and plots in an output folder."""
from __future__ import annotations

import click

from verikit.cli.common import Seconds, console, handles_errors, threads_option, use_threads

MODE_HELP = ("bounds: the lower bound of every spec row c.y - d and its gap to the tightest method; "
             "radius: the certified radius per norm (with PGD's upper bracket); verdicts: verify with each "
             "method (or chain a+b) then bab until --timeout. Default: bounds, or the experiment's mode.")


@click.command(short_help="Compare methods (and imported tools' results) over a benchmark set.")
@click.argument("set_path", metavar="SET", type=click.Path(exists=True))
@click.option("--methods", "-m", help="Comma-separated bound methods; `a+b` a chain (verdicts), "
              "`name:key=value` an option (cnn-cert:mode=ada); `none`: no run, only the --import results. "
              "Required unless SET is a YAML experiment (whose methods it replaces).")
@click.option("--mode", type=click.Choice(["bounds", "radius", "verdicts"]), help=MODE_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: records.csv, records.jsonl, summary.md, plots/. Created if missing; an "
                   "existing one must be a folder `compare` wrote (its measurements are skipped: resumable).")
@click.option("--norms", default="inf", show_default=True,
              help="radius mode on spec files: comma-separated norms (inf, 2, 1) around each spec's centre.")
@click.option("--timeout", default=60.0, show_default=True, type=Seconds(),
              help="verdicts: at most this many seconds an instance (an instances.csv's own timeout if lower).")
@click.option("--steps", default=15, show_default=True, type=click.IntRange(min=1), help="radius: search steps.")
@click.option("--no-attack", is_flag=True, help="radius: skip PGD's upper bracket.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Measurements run in parallel processes, one torch thread each (same results as 1).")
@click.option("--scheduler", help="Run the measurements on a Dask cluster instead: local, local:N or a scheduler's "
                                  "address (README: Scale out; the workers read the set's files at its paths).")
@click.option("--limit", type=click.IntRange(min=0), help="Only this many new measurements (a later run resumes).")
@click.option("--import", "imports", multiple=True, metavar="TOOL=FILE",
              help="Another verifier's per-instance results (onnx,vnnlib,result,seconds; or an instances.csv "
                   "with a TOOL_s column) shown beside verikit's. Repeatable.")
@click.option("--no-plots", is_flag=True, help="Skip the plots (they need matplotlib: the `plots` extra).")
@threads_option
@handles_errors
def compare(set_path, methods, mode, out, norms, timeout, steps, no_attack, workers, scheduler, limit, imports,
            no_plots) -> None:
    """Run several methods over a benchmark SET and compare them: one record per measurement
    (values, seconds, peak memory, options, version, commit, machine) in OUT/records.csv and
    .jsonl, a summary table here and in OUT/summary.md, plots in OUT/plots/ (PNG and SVG).

    SET is a VNN-COMP instances.csv, a folder of .onnx and .vnnlib files (one model with every spec,
    or each spec with the model of its stem), or a YAML experiment (models x inputs x norms x
    epsilons x methods; see verikit/compare/experiment.py and benchmarks/cnn_cert_experiment.yaml).

    \b
    Examples:
      verikit compare specs/ --methods ibp,fast-lin,crown,alpha-crown --out cmp
      verikit compare specs/ --mode radius --norms inf,2 --methods fast-lin,crown --out radii
      verikit compare acasxu/instances.csv --mode verdicts --methods ibp,crown,ibp+crown \\
          --timeout 30 --workers 2 --out acas --import abcrown=abcrown_results.csv
      verikit compare benchmarks/cnn_cert_experiment.yaml --out benchmarks/results/cnn_cert
      verikit compare peers/instances.csv --mode verdicts --methods none \\
          --import abcrown=abcrown_results.csv --import nnenum=nnenum_results.csv --out peers
    """
    from pathlib import Path

    from verikit.compare import Settings, compare as run_comparison, parse_methods
    from verikit.compare.peers import parse_import
    from verikit.compare.summary import show
    from verikit.errors import VerikitError

    use_threads()
    if scheduler:
        from verikit.scale.cluster import check_scheduler

        check_scheduler(scheduler)
    chosen = None if methods is None else [m for m in parse_methods(methods) if m.label != "none"]
    norm_list = tuple(n.strip() for n in norms.split(",") if n.strip())
    if not norm_list or any(n not in ("inf", "2", "1") for n in norm_list):
        raise VerikitError(f"bad --norms {norms!r}", place="--norms", fix="give inf, 2 or 1, comma-separated")
    settings = Settings(mode=mode or "bounds", norms=norm_list, timeout=timeout, steps=steps, attack=not no_attack)
    with _progress() as (on_plan, on_records):
        outcome = run_comparison(set_path, out, chosen, settings, mode_given=mode is not None, workers=workers,
                                 limit=limit, imports=[parse_import(text) for text in imports],
                                 plots=not no_plots, on_records=on_records, on_plan=on_plan, scheduler=scheduler)
    show(outcome.tables, outcome.notes, console(stderr=False))
    click.echo(f"records, summary.md{' and plots' if outcome.plots else ''} in {Path(out)}")


class _progress:
    """A rich progress bar on stderr: sized when the plan is known, advanced per measurement."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console())
        self.bar.__enter__()
        self.task = None
        return self.plan, self.advance

    def plan(self, total: int, recorded: int, to_run: int) -> None:
        self.task = self.bar.add_task(f"measuring ({recorded} of {total} already recorded)", total=to_run)

    def advance(self, records) -> None:
        first = records[0]
        if first.error:
            self.bar.console.print(f"error: {first.method} on {first.spec}: {first.error}")
        if self.task is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)
