"""The `verikit` command line: the group and its commands, one module per command group.

Every command has --help with an example and --debug for tracebacks. Exit codes (README, "Exit codes
and JSON output"): 0 completed, 1 internal error, 2 bad input, 3 and 4 a suite's contradictions and
errors, 5 a timeout of bound/radius, 10/20 a verdict under `verify --exit-code`, 130 Ctrl-C, 143 SIGTERM."""
from __future__ import annotations

import gc
import os
import warnings

import click

from verikit.cli.bound_commands import bound, radius
from verikit.cli.common import install_sigterm_handler
from verikit.cli.compare_command import compare
from verikit.cli.explain_command import explain
from verikit.cli.plugins_command import plugins
from verikit.cli.run_command import run
from verikit.cli.train_command import train
from verikit.cli.verify_command import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="verikit")
@click.option("--threads", type=click.IntRange(min=1), envvar="VERIKIT_THREADS", default=1, show_default=True,
              help="torch CPU threads per process (also VERIKIT_THREADS, or --threads after the command).")
def main(threads: int) -> None:
    """verikit: prove or refute properties of neural networks.

    \b
    Examples:
      verikit verify net.onnx prop.vnnlib --timeout 60 --results out.txt
      verikit bound net.onnx prop.vnnlib --method crown
      verikit run ../shared/benchmarks/acasxu/instances.csv --timeout-cap 30 --out acas.csv
      verikit radius net.onnx --input x.npy --label 3 --norm 2 --method cnn-cert
      verikit plugins
      verikit compare specs/ --methods ibp,crown,alpha-crown --out cmp
      verikit train singleprop --data digits --eps 0.1 --out sp.onnx
      verikit explain gap.onnx --input x.npy --method cam --out maps

    \b
    Exit codes: 0 done, 1 internal error, 2 bad input, 3 run: a contradiction,
    4 run: an instance errored, 5 bound/radius: --timeout reached,
    10 sat / 20 unsat (verify --exit-code), 130 Ctrl-C, 143 SIGTERM.
    """
    os.environ["VERIKIT_THREADS"] = str(threads)
    warnings.formatwarning = lambda message, *_: f"warning: {message}\n"  # one line, no source excerpt
    context = click.get_current_context()
    context.call_on_close(install_sigterm_handler())  # SIGTERM unwinds like Ctrl-C: workers are stopped
    # Start-up: torch's import leaves a large heap, and each full garbage collection over it costs ~70 ms
    # here. Collections wait until a command's imports are done (`use_threads` freezes that heap).
    gc.disable()
    context.call_on_close(gc.enable)


for command in (verify, bound, run, radius, plugins, train, compare, explain):
    main.add_command(command)

__all__ = ["main"]
