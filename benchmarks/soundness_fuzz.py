"""Soundness fuzz, long run: random small ONNX nets and VNN-LIB specs (tests/fuzz.py), checking every bound
method's containment of sampled and attacked values, and verify's verdicts against an exact MILP or a
falsifier. Prints progress and a summary, and writes the counts and findings as JSON.

    python benchmarks/soundness_fuzz.py --seed 1000 --models 400 --timeout 5 --out /tmp/fuzz.json

The files of every spec with a failure are copied to /tmp/fuzz_failures/ (--keep).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

from fuzz import FAILURES, FuzzReport, run_fuzz  # noqa: E402


def _progress(started: float, every: int):
    """A progress callback printing the running counts every `every` models."""
    def say(seed: int, report: FuzzReport) -> None:
        if report.models % every == 0:
            print(f"[{time.monotonic() - started:7.0f} s] seed {seed}: {_counts(report)}", flush=True)
    return say


def _counts(report: FuzzReport) -> str:
    return (f"{report.models} models, {report.specs} specs, {report.containment_checks} containment checks, "
            f"{len(report.containment_violations)} violations, {report.verdict_comparisons} exact comparisons "
            f"({report.exact_sat} sat, {report.exact_unsat} unsat, {report.borderline_skipped} borderline), "
            f"{report.falsifier_checks} falsifier checks ({report.falsified} falsified), "
            f"{len(report.wrong_verdicts)} wrong verdicts, {len(report.missed_sats)} missed sats, "
            f"{len(report.errors)} errors")


def _summary(report: FuzzReport, seconds: float) -> str:
    lines = [f"finished in {seconds:.0f} s: {_counts(report)}",
             f"verify's verdicts: {report.verdicts}; sat re-checked: {report.sat_rechecks}",
             f"skipped (method, specs): {report.skipped_methods}",
             f"spec features: {report.features}"]
    for title, findings in (("violation", report.containment_violations), ("wrong verdict", report.wrong_verdicts),
                            ("error", report.errors), ("missed sat", report.missed_sats)):
        lines += [f"{title}: seed {f.seed} {f.spec} [{f.method}] {f.detail}" for f in findings]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1000, help="first model seed (seeds seed .. seed+models-1)")
    parser.add_argument("--models", type=int, default=400)
    parser.add_argument("--specs", type=int, default=3, help="specs per model")
    parser.add_argument("--timeout", type=float, default=5.0, help="verify's timeout per spec, in seconds")
    parser.add_argument("--out", type=Path, default=None, help="write the counts and findings here as JSON")
    parser.add_argument("--folder", type=Path, default=None, help="where the models and specs go (a temporary folder)")
    parser.add_argument("--keep", type=Path, default=FAILURES, help="where the files of failures are copied")
    parser.add_argument("--every", type=int, default=10, help="print progress every this many models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.folder is not None:
        args.folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        report = run_fuzz(range(args.seed, args.seed + args.models), args.folder or Path(scratch), args.timeout,
                          _progress(started, args.every), specs_per_model=args.specs, keep=args.keep)
    seconds = time.monotonic() - started
    print(_summary(report, seconds))
    if args.out is not None:
        settings = {"seed": args.seed, "models": args.models, "specs_per_model": args.specs,
                    "timeout": args.timeout, "seconds": round(seconds, 1)}
        args.out.write_text(json.dumps({"settings": settings, **report.summary()}, indent=1), encoding="utf-8")
    sys.exit(1 if report.failures() else 0)


if __name__ == "__main__":
    main()
