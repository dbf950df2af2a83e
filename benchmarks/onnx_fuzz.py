"""Seeded mutants of small ONNX models of every op family (tests/onnx_mutants.py), loaded in a child
process under a memory limit and a per-file time limit: counts of mutants tried, loaded, clean errors
(verikit's own), other exceptions and hangs (both must be 0).

    python benchmarks/onnx_fuzz.py --mutants 2000 --seed 2026
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from netgen import every_family  # noqa: E402
from onnx_mutants import LoadReport, load_in_child, mutate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--batch", type=int, default=200, help="mutants a child process loads")
    args = parser.parse_args()
    rng, total, started = np.random.default_rng(args.seed), LoadReport(), time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        originals = [path.read_bytes() for path in every_family(Path(folder)).values()]
        for first in range(0, args.mutants, args.batch):
            paths = []
            for index in range(first, min(args.mutants, first + args.batch)):
                path = Path(folder) / f"mutant_{index}.onnx"
                path.write_bytes(mutate(originals[index % len(originals)], rng))
                paths.append(path)
            report = load_in_child(paths, seconds=10)
            total.tried += report.tried
            total.loaded += report.loaded
            total.clean_errors += report.clean_errors
            total.hangs += report.hangs
            total.other += report.other
            print(f"{total.tried} tried: {total.loaded} loaded, {total.clean_errors} clean errors, "
                  f"{len(total.other)} other, {total.hangs} hangs", flush=True)
    print(f"| mutants | loaded | clean errors | other exceptions | hangs | seconds |\n|---:|---:|---:|---:|---:|---:|\n"
          f"| {total.tried} | {total.loaded} | {total.clean_errors} | {len(total.other)} | {total.hangs} | "
          f"{time.monotonic() - started:.0f} |")
    for line in total.other[:20]:
        print(line)


if __name__ == "__main__":
    main()
