"""Two `verikit run` results CSVs of the same instances side by side (a baseline commit and the
current one): per group, decided, sat found, the median seconds to a counterexample, the worst
overrun of the cap, contradictions of the expected answers, and every instance decided by one only.

    python benchmarks/side_by_side.py base.csv new.csv --cap 60 [--names base,new]

Groups: the suite folder of the model (cifar10_resnet, oval21, ...) or, for specs written by
derived_specs.py, the suite and the variant (`oval21 wide3`).
"""
from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path


SUITES = ("acasxu", "mnistfc", "eran", "verivital", "oval21", "cifar10_resnet", "test")


def group(row: dict) -> str:
    """The suite of the instance (from its model's path), and for derived specs their variant."""
    suite = next((s for s in SUITES if f"/{s}/" in row["onnx"]), Path(row["onnx"]).parent.name)
    stem = Path(row["vnnlib"]).stem
    return f"{suite} {stem.rsplit('-', 1)[1]}" if stem.startswith(f"{suite}-") else suite


def read(path: Path) -> dict[tuple[str, str], dict]:
    with open(path) as handle:
        return {(r["onnx"], r["vnnlib"]): r for r in csv.DictReader(handle)}


def summary(rows: list[dict], cap: float) -> str:
    decided = [r for r in rows if r["verdict"] in ("sat", "unsat")]
    sats = [float(r["seconds"]) for r in rows if r["verdict"] == "sat"]
    overrun = max((float(r["seconds"]) - min(cap, float(r.get("timeout") or cap)) for r in rows), default=0.0)
    wrong = sum(r.get("agreement") == "no" for r in rows)
    median = f"{statistics.median(sats):.1f}" if sats else "-"
    return f"{len(decided)} | {len(sats)} | {median} | {overrun:+.1f} | {wrong}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--cap", type=float, default=60.0)
    parser.add_argument("--names", default="base,new")
    args = parser.parse_args()
    base, new = read(args.base), read(args.new)
    shared = sorted(set(base) & set(new))
    names = args.names.split(",")
    groups = sorted({group(base[key]) for key in shared})
    columns = ["decided", "sat", "median s to sat", "worst overrun s", "wrong"]
    print("| group | instances | " + " | ".join(f"{n}: {c}" for n in names for c in columns) + " |")
    print("|---|" + "---:|" * (1 + 2 * len(columns)))
    for name in groups + ["all"]:
        keys = [k for k in shared if name == "all" or group(base[k]) == name]
        print(f"| {name} | {len(keys)} | {summary([base[k] for k in keys], args.cap)} "
              f"| {summary([new[k] for k in keys], args.cap)} |")
    for key in shared:
        one, two = base[key]["verdict"], new[key]["verdict"]
        if (one in ("sat", "unsat")) != (two in ("sat", "unsat")) or (one != two and "unknown" not in (one, two)
                                                                      and one in ("sat", "unsat")):
            print(f"- {Path(key[1]).stem}: {names[0]} {one} {float(base[key]['seconds']):.1f} s, "
                  f"{names[1]} {two} {float(new[key]['seconds']):.1f} s")


if __name__ == "__main__":
    main()
