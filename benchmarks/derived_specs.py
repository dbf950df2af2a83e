"""Specs derived from the 2021 suites' conv nets, for generalisation checks of falsification: boxes
widened around the original centre (counterexamples PGD can find), all inputs pinned but a window,
two-sided output bands, and tiny boxes. Writes VNN-LIB files and an instances.csv (expected answers
unknown: every `sat` verikit reports is confirmed by onnxruntime, so sat counts are exact) that
`verikit run` takes.

    python benchmarks/derived_specs.py --out /tmp/derived --per-net 4
    verikit run /tmp/derived/instances.csv --timeout-cap 60
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import numpy as np
import torch

import verikit
from verikit.region import Box
from verikit.spec.property import OutputClause, Property, RegionSpec
from verikit.spec.vnnlib import write_vnnlib

SUITES = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
NETS = ("cifar10_resnet", "oval21", "eran")


def _with_box(prop: Property, lower: torch.Tensor, upper: torch.Tensor, clauses=None) -> Property:
    spec = prop.regions[0]
    region = RegionSpec(Box(lower[None], upper[None]), clauses or spec.clauses, spec.input_constraints)
    return dataclasses.replace(prop, regions=(region,))


def variants(model, prop: Property, rng: np.random.Generator) -> dict[str, Property]:
    """Named variants of a one-region property around its box's centre."""
    box = prop.regions[0].region.bounding_box()
    lower, upper = box.lower[0].double(), box.upper[0].double()
    center, half = (lower + upper) / 2, (upper - lower) / 2
    n = center.numel()
    found = {f"wide{k}": _with_box(prop, center - k * half, center + k * half) for k in (3, 8)}
    window = torch.zeros(n, dtype=torch.bool)
    start = int(rng.integers(0, n - n // 10))
    window[start:start + max(1, n // 10)] = True  # a tenth of the inputs free, the rest pinned
    pinned = torch.where(window, 8 * half, torch.zeros_like(half))
    found["pinned"] = _with_box(prop, center - pinned, center + pinned)
    with torch.no_grad():
        y = model.to(torch.float64).forward_flat(center[None])[0]
    k = int(rng.integers(0, y.numel()))
    band = 0.05 * (1 + abs(float(y[k])))
    rows = torch.zeros(2, y.numel(), dtype=torch.float64)
    rows[0, k], rows[1, k] = 1.0, -1.0  # lo <= Y_k <= hi, as two rows of one clause
    offset = float(rng.uniform(-1.5, 1.5)) * band
    rhs = torch.tensor([float(y[k]) + offset + band, -(float(y[k]) + offset - band)], dtype=torch.float64)
    found["band"] = _with_box(prop, center - half, center + half, (OutputClause(rows, rhs),))
    tiny = 1e-4 * half / half.max()  # the box's shape, its widest side 2e-4
    found["tiny"] = _with_box(prop, center - tiny, center + tiny)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/verikit-derived"))
    parser.add_argument("--per-net", type=int, default=3, help="original instances a net to derive from")
    parser.add_argument("--suites", default=",".join(NETS))
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for suite in args.suites.split(","):
        with open(SUITES / suite / "instances.csv") as handle:
            instances = list(csv.DictReader(handle))
        by_net: dict[str, list[dict]] = {}
        for row in instances:
            by_net.setdefault(row["onnx"], []).append(row)
        for onnx, chosen in by_net.items():
            model = verikit.load_model(SUITES / suite / onnx)
            for row in chosen[: args.per_net]:
                prop = verikit.load_spec(SUITES / suite / row["vnnlib"], model)
                if len(prop.regions) != 1:
                    continue
                stem = f"{suite}-{Path(onnx).stem}-{Path(row['vnnlib']).stem}"
                for name, derived in variants(model, prop, rng).items():
                    path = args.out / f"{stem}-{name}.vnnlib"
                    write_vnnlib(derived, path)
                    rows.append({"onnx": str(SUITES / suite / onnx), "vnnlib": str(path),
                                 "timeout_s": args.timeout, "expected": ""})
    with open(args.out / "instances.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["onnx", "vnnlib", "timeout_s", "expected"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} instances in {args.out / 'instances.csv'}")


if __name__ == "__main__":
    main()
