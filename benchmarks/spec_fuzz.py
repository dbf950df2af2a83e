"""Spec reader fuzz, long run: mutants of valid VNN-LIB and YAML specs (the mutator of
tests/test_spec_fuzz.py) read in a child process limited to 2 GB of address space, each within 2 s.
Every mutant must end in a valid Property or a VerikitError; prints and writes the counts as JSON.

    python benchmarks/spec_fuzz.py --seed 1 --count 10000 --out /tmp/spec_fuzz.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_spec_fuzz import Mutant, Report, mutants, outcome, seeds  # noqa: E402


class _Hang(BaseException):
    """Raised by the alarm in the child; a BaseException, so that no `except Exception` swallows it."""


def _child(batch: list[Mutant], folder: str, limits: tuple[float, int], results) -> None:
    """Read each mutant under the address-space and per-input time limits, sending one result each."""
    seconds, memory = limits
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def alarm(signum, frame):
        raise _Hang

    signal.signal(signal.SIGALRM, alarm)
    for mutant in batch:
        path = Path(folder) / mutant.name
        path.write_bytes(mutant.data)
        start = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            result = outcome(path, mutant.sizes)
        except _Hang:
            result = "hang"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        path.unlink()
        results.send((result, time.perf_counter() - start))
    results.close()


def run_batch(batch: list[Mutant], folder: str, limits: tuple[float, int], report: Report) -> None:
    """Run `batch` in forked children; a child that dies costs its current mutant ('crash') and the rest
    goes on in a new one."""
    context = multiprocessing.get_context("fork")
    while batch:
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(batch, folder, limits, send))
        child.start()
        send.close()
        done = 0
        try:
            while done < len(batch):
                result, seconds = receive.recv()
                report.add(batch[done], result, seconds)
                done += 1
        except EOFError:  # the child died without a word on this mutant
            report.add(batch[done], "crash", 0.0)
            done += 1
        child.join()
        batch = batch[done:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=10000, help="mutants to try")
    parser.add_argument("--batch", type=int, default=250, help="mutants per child process")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds allowed per input")
    parser.add_argument("--memory-gb", type=float, default=2.0, help="address-space limit of the child")
    parser.add_argument("--out", type=Path, default=Path("/tmp/spec_fuzz.json"))
    args = parser.parse_args()
    limits = (args.timeout, int(args.memory_gb * 2**30))
    corpus = seeds()
    report = Report()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        every = mutants(args.count, args.seed, corpus)
        for start in range(0, len(every), args.batch):
            run_batch(every[start:start + args.batch], folder, limits, report)
            print(f"[{time.monotonic() - started:6.0f} s] {dict(report.counts)}", flush=True)
    summary = {
        "seed": args.seed, "seeds": [seed.name for seed in corpus], "limits": {"seconds": args.timeout,
                                                                                "memory_gb": args.memory_gb},
        "tried": report.counts["tried"], "clean_errors": report.counts["error"],
        "accepted": report.counts["accepted"], "other_exceptions": report.counts["exception"],
        "hangs": report.counts["hang"], "crashes": report.counts["crash"],
        "slowest_s": round(report.slowest[0], 3), "slowest": report.slowest[1],
        "child_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
        "wall_s": round(time.monotonic() - started, 1), "failures": report.failures,
    }
    args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({key: value for key, value in summary.items() if key != "failures"}, indent=1))
    for failure in report.failures[:20]:
        print("FAILURE", failure)
    if report.failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
