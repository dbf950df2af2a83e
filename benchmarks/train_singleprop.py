"""SingleProp against its baselines on digits: seconds per epoch of each trainer (as ratios to standard
training, measured in one run) and certified accuracy on the test split at two eps, by verikit's `ibp`
and `crown` on the trained model (the same engines `verify` uses).

    python benchmarks/train_singleprop.py --epochs 40 --eps 0.05 --trainers standard,ibp,crown-ibp,singleprop
    python benchmarks/train_singleprop.py --epochs 2 --trainers standard,pgd-at     # pgd-at's cost only

One untimed epoch of standard training comes first, so no trainer pays torch's warm-up.
"""
from __future__ import annotations

import argparse
import time

import torch

import verikit
from verikit.region import Box
from verikit.trainers.data import load_data
from verikit.trainers.engine import LiveGraph, input_box, margin_rows
from verikit.trainers.run import train

TRAINERS = ("standard", "pgd-at", "ibp", "crown-ibp", "singleprop")


def certified(model, data, eps: float, method: str) -> float:
    """Share of test inputs whose every margin y_true - y_j has a positive lower bound (clipped box)."""
    graph = LiveGraph(model, data.input_shape).graph()
    box = input_box(data.x_test, eps, data.domain)
    rows = margin_rows(data.y_test, data.classes)
    with torch.no_grad():
        lower = verikit.bound(graph, Box(box.lower, box.upper), method=method, coefficients=rows).lower
    others = lower + torch.eye(data.classes)[data.y_test] * 1e9  # row y is 0 by construction
    return float((others > 0).all(1).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--arch", default="mnist-small")
    parser.add_argument("--trainers", default=",".join(TRAINERS), help="comma-separated, standard first")
    arguments = parser.parse_args()
    data = load_data("digits", seed=0)
    train("standard", data, arguments.arch, epochs=1, eps=arguments.eps, seed=0)  # warm-up, not timed
    rows = []
    for name in arguments.trainers.split(","):
        started = time.perf_counter()
        model = train(name, data, arguments.arch, epochs=arguments.epochs, eps=arguments.eps, seed=0)
        seconds = (time.perf_counter() - started) / arguments.epochs
        clean = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
        scores = [certified(model, data, eps, method) for eps in (arguments.eps / 2, arguments.eps)
                  for method in ("ibp", "crown")]
        rows.append((name, seconds, clean, *scores))
    base = rows[0][1]
    half, full = arguments.eps / 2, arguments.eps
    print(f"| trainer | s/epoch | x standard | clean | ibp@{half:g} | crown@{half:g} | ibp@{full:g} | crown@{full:g} |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seconds, clean, *scores in rows:
        cells = " | ".join(f"{100 * s:.1f}" for s in scores)
        print(f"| {name} | {seconds:.2f} | {seconds / base:.1f} | {100 * clean:.1f} | {cells} |")


if __name__ == "__main__":
    main()
