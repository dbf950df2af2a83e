"""Solved counts and total wall time on the 60 instances the peers were measured on
(`shared/benchmarks/peers/`: 30 ACAS Xu, 30 mnistfc 256x2; 120 s cap), side by side with nnenum and
alpha-beta-CROWN.

    python benchmarks/peers.py [--cap 120] [--workers 1] [--out DIR]

Writes DIR/peers_<suite>.csv (verikit run's results) and prints the comparison table.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def instance_lists(out: Path) -> dict[str, Path]:
    """One instances.csv per suite with absolute paths and the expected answers."""
    rows = list(csv.DictReader(open(SHARED / "peers" / "instances.csv")))
    lists = {}
    for suite in ("acasxu", "mnistfc"):
        expected = {(r["onnx"], r["vnnlib"]): r["expected"]
                    for r in csv.DictReader(open(SHARED / suite / "instances.csv"))}
        path = out / f"instances_{suite}.csv"
        with open(path, "w") as handle:
            handle.write("onnx,vnnlib,timeout_s,expected\n")
            for r in rows:
                if r["benchmark"] == suite:
                    handle.write(f"{SHARED / suite / r['onnx']},{SHARED / suite / r['vnnlib']},{r['timeout']},"
                                 f"{expected[(r['onnx'], r['vnnlib'])]}\n")
        lists[suite] = path
    return lists


def peer_rows(name: str, suite: str) -> tuple[int, float]:
    rows = [r for r in csv.DictReader(open(SHARED / "peers" / f"{name}_results.csv")) if r["benchmark"] == suite]
    return sum(r["result"] in ("sat", "unsat") for r in rows), sum(float(r["seconds"]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=120)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("peers-run"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| tool | suite | solved | sat | unsat | wrong | total s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for suite, path in instance_lists(args.out).items():
        results = args.out / f"peers_{suite}.csv"
        subprocess.run([sys.executable, "-m", "verikit.cli", "run", str(path), "--timeout-cap", str(args.cap),
                        "--workers", str(args.workers), "--out", str(results)], check=False,
                       stdout=subprocess.DEVNULL)
        rows = list(csv.DictReader(open(results)))
        verdicts = [r["verdict"] for r in rows]
        wrong = sum(r["agreement"] == "no" for r in rows)
        total = sum(float(r["seconds"]) for r in rows)
        print(f"| verikit | {suite} | {verdicts.count('sat') + verdicts.count('unsat')}/{len(rows)} | "
              f"{verdicts.count('sat')} | {verdicts.count('unsat')} | {wrong} | {total:.1f} |")
        for peer in ("nnenum", "abcrown"):
            solved, seconds = peer_rows(peer, suite)
            print(f"| {peer} | {suite} | {solved}/30 | | | 0 | {seconds:.1f} |")


if __name__ == "__main__":
    main()
