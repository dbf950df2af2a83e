"""What every command shares: exit codes, error and signal handling, and the options several take.

Nothing here imports torch: `verikit verify -q` starts in a fraction of a second, and torch is imported
by a command once its arguments are checked (`use_threads`)."""
from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import signal
import sys
import time
from typing import Callable, Iterator

import click

from verikit.errors import VerikitError

# Exit codes (README, "Exit codes and JSON output").
EXIT_OK = 0  # the command completed (verify: whatever the verdict, unless --exit-code)
EXIT_INTERNAL = 1  # a bug in verikit
EXIT_BAD_INPUT = 2  # bad arguments or input files: one message naming the file, the place and the fix
EXIT_CONTRADICTION = 3  # run: a verdict contradicts the suite's expected one
EXIT_INSTANCE_ERRORS = 4  # run: an instance ended in `error`
EXIT_TIMEOUT = 5  # bound, radius: the computation did not finish within --timeout
EXIT_SAT = 10  # verify --exit-code: a counterexample was found
EXIT_UNSAT = 20  # verify --exit-code: the property holds
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C raises KeyboardInterrupt: the same `with`
    blocks unwind, so process pools terminate their workers before verikit exits."""


class CommandTimeout(Exception):
    """A computation ran past the command's --timeout."""

    def __init__(self, what: str, seconds: float):
        super().__init__(f"{what} did not finish within {seconds:g} s (--timeout)")


def on_sigterm(signum: int, frame) -> None:
    """Raise Terminated once; a second SIGTERM while the first unwinds is ignored, so the workers'
    clean-up is not cut short (SIGKILL still ends the process)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def install_sigterm_handler() -> Callable[[], None]:
    """Turn SIGTERM into Terminated for the rest of the command; returns what restores the old handler
    (a no-op off the main thread, where Python cannot set one)."""
    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def handles_errors(command: Callable) -> Callable:
    """Add --debug, and turn every way a command can fail into one line on stderr and an exit code:
    bad input 2, a timeout 5, Ctrl-C 130, SIGTERM 143, a bug 1 (no traceback unless --debug)."""

    @click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
    @functools.wraps(command)
    def wrapper(*args, debug: bool = False, **kwargs):
        try:
            return command(*args, **kwargs)
        except VerikitError as error:
            if debug:
                raise
            fail(f"error: {error}", EXIT_BAD_INPUT)
        except CommandTimeout as error:
            fail(f"timeout: {error}", EXIT_TIMEOUT)
        except Terminated:
            fail("terminated", EXIT_TERMINATED)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except Exception as error:  # an internal bug: say so plainly
            if debug:
                raise
            fail(f"internal error: {type(error).__name__}: {error}\n  (run again with --debug for the "
                 "traceback, and please report it)", EXIT_INTERNAL)

    return wrapper


def fail(message: str, code: int) -> None:
    """Print `message` on stderr and exit with `code`."""
    click.echo(message, err=True)
    sys.exit(code)


def console(stderr: bool = True):
    """A rich console (imported on use: rich costs start-up time); tables go to stdout, progress to stderr."""
    from rich.console import Console

    return Console(stderr=stderr)


def use_threads() -> None:
    """Set torch's CPU threads from VERIKIT_THREADS (default 1: the small networks of verification
    run fastest single-threaded, and suites run one process per core instead); resume garbage
    collection with what start-up imported frozen (later collections need not walk it)."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("VERIKIT_THREADS", "1"))))
    gc.freeze()
    gc.enable()


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Stop the computation inside after `seconds` (None: no limit) with CommandTimeout; the engines
    check verikit.deadline between layers and chunks."""
    from verikit import deadline

    if seconds is None:
        yield
        return
    try:
        with deadline.until(time.monotonic() + seconds):
            yield
    except deadline.DeadlineReached:
        raise CommandTimeout(what, seconds) from None


class Seconds(click.ParamType):
    """A duration in seconds: a finite number above 0 (0, negative, nan and inf are refused)."""

    name = "seconds"

    def convert(self, value, parameter, context) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", parameter, context)
        if not (math.isfinite(seconds) and seconds > 0):
            self.fail(f"{value!r} is not a finite number of seconds above 0", parameter, context)
        return seconds


def timeout_option(default: float | None, help: str):
    return click.option("--timeout", default=default, show_default=default is not None, type=Seconds(),
                        help=help)


def _check_device(context, parameter, value: str) -> str:
    """`cpu`, or a CUDA device that torch can see (checked before any work starts)."""
    if value == "cpu":
        return value
    import torch

    if not value.startswith("cuda") or not torch.cuda.is_available():
        raise click.BadParameter(f"{value!r} is not available here (torch sees no CUDA GPU); use --device cpu")
    return value


def device_choice(help: str = "Where the bounds and branch and bound compute: cpu, or cuda for a GPU (attacks "
                                "and LP leaves stay on the CPU).") -> Callable:
    """The --device option (checked before any work starts), with a command's own help text."""
    return click.option("--device", default="cpu", show_default=True, callback=_check_device, help=help)


device_option = device_choice()


def _set_threads(context, parameter, value: int | None) -> None:
    if value is not None:
        os.environ["VERIKIT_THREADS"] = str(value)


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), expose_value=False, callback=_set_threads,
    help="torch CPU threads per process (as `verikit --threads N COMMAND`, or VERIKIT_THREADS).")

seed_option = click.option(
    "--seed", default=0, show_default=True, type=int,
    help="Seed of the attacks' random starts: the same seed repeats the same search (up to where the "
         "timeout cuts it).")


class MethodOption(click.Option):
    """An option naming a method of one role ("bound", "attack", "complete"). Its help lists the
    registered methods of that role, looked up only when help is shown (loading plugins imports torch)."""

    def __init__(self, *args, role: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.role, self.base_help = role, self.help or ""

    def get_help_record(self, context):
        try:
            from verikit.roles import method_names

            names = ", ".join(method_names(self.role))
        except Exception:  # a broken plugin must not break --help
            names = "see `verikit plugins`"
        self.help = f"{self.base_help} Available: {names}."
        return super().get_help_record(context)


def method_option(*names: str, role: str, **kwargs):
    return click.option(*names, cls=MethodOption, role=role, **kwargs)


def none_to_skip(name: str) -> str | None:
    """A stage's method, or None where the user wrote `none` to skip it."""
    return None if name == "none" else name


def options(*decorators: Callable) -> Callable:
    """Apply several option decorators in the order written (the first shown first in --help)."""

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply
