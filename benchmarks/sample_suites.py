"""A fixed random sample of the suites too slow to run whole here (verivital, eran's ReLU net, oval21,
cifar10_resnet: 300-720 s per instance officially), run with one `verikit run` under a shorter cap.

    python benchmarks/sample_suites.py [--cap 60] [--seed 7] [--out DIR]

Writes DIR/sample.csv (the instances, with the expected answers) and DIR/sample_results.csv, and
prints a per-suite table: decided, agreement with the expected answers, and the seconds spent.
"""
from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
SAMPLE = {"verivital": 12, "eran": 8, "oval21": 5, "cifar10_resnet": 5}


def write_sample(path: Path, seed: int) -> dict[str, str]:
    """The sample as a VNN-COMP csv with absolute paths; returns onnx,vnnlib -> suite."""
    rng, suites = random.Random(seed), {}
    with open(path, "w") as handle:
        handle.write("onnx,vnnlib,timeout_s,expected\n")
        for suite, count in SAMPLE.items():
            rows = list(csv.DictReader(open(SHARED / suite / "instances.csv")))
            if suite == "eran":  # the ReLU net (the sigmoid one is quick enough to run whole: README)
                rows = [r for r in rows if "relu" in r["onnx"]]
            for row in rng.sample(rows, count):
                onnx, vnnlib = SHARED / suite / row["onnx"], SHARED / suite / row["vnnlib"]
                handle.write(f"{onnx},{vnnlib},{row['timeout_s']},{row['expected']}\n")
                suites[f"{onnx},{vnnlib}"] = suite
    return suites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("sample-run"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suites = write_sample(args.out / "sample.csv", args.seed)
    results = args.out / "sample_results.csv"
    subprocess.run([sys.executable, "-m", "verikit.cli", "run", str(args.out / "sample.csv"), "--timeout-cap",
                    str(args.cap), "--out", str(results)], check=False, stdout=subprocess.DEVNULL)
    table = defaultdict(lambda: defaultdict(float))
    for row in csv.DictReader(open(results)):
        entry = table[suites[f"{row['onnx']},{row['vnnlib']}"]]
        entry["instances"] += 1
        entry[row["verdict"]] += 1
        entry["wrong"] += row["agreement"] == "no"
        entry["seconds"] += float(row["seconds"])
    print("| suite | instances | sat | unsat | timeout/unknown | wrong | total s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for suite, entry in table.items():
        undecided = entry["instances"] - entry["sat"] - entry["unsat"]
        print(f"| {suite} | {entry['instances']:.0f} | {entry['sat']:.0f} | {entry['unsat']:.0f} | {undecided:.0f} | "
              f"{entry['wrong']:.0f} | {entry['seconds']:.1f} |")


if __name__ == "__main__":
    main()
