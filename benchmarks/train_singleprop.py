"""SingleProp against its baselines: seconds per epoch of each trainer (as ratios to standard training,
measured in one run), clean accuracy, certified accuracy on the test split at eps/2 and eps by verikit's
`ibp` and `crown` on the trained model, and `verify` (attack, bounds, branch and bound) on a sample of test
points at eps, on the exported ONNX file.

    python benchmarks/train_singleprop.py --data digits --epochs 200 --eps 0.05
    python benchmarks/train_singleprop.py --data mnist5k --epochs 80 --eps 0.1 --certify ibp,cnn-cert --test-limit 200
    python benchmarks/train_singleprop.py --epochs 3 --full-eps --verify-sample 0   # each loss's cost at full eps

One untimed epoch of standard training comes first, so no trainer pays torch's warm-up. `--plot F.png`
draws certified accuracy per trainer beside the cost ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import verikit
from verikit.region import Box
from verikit.spec import robustness_property
from verikit.trainers.data import Dataset, load_data
from verikit.trainers.engine import LiveGraph, input_box, margin_rows

TRAINERS = ("standard", "pgd-at", "ibp", "crown-ibp", "singleprop")


@dataclass
class Row:
    trainer: str
    seconds: float  # per epoch
    clean: float
    certified: dict[str, float] = field(default_factory=dict)  # "crown@0.05" -> share of the test split
    verified: tuple[int, int, int] = (0, 0, 0)  # unsat, sat, sample size (verify on the exported file)


def certified_mask(model, data: Dataset, eps: float, method: str, limit: int | None = None) -> torch.Tensor:
    """Which of the first `limit` test inputs have every margin y_true - y_j bounded above 0 on their
    clipped eps box."""
    graph = LiveGraph(model, data.input_shape).graph()
    x, y = data.x_test[:limit], data.y_test[:limit]
    box = input_box(x, eps, data.domain)
    rows = margin_rows(y, data.classes)
    with torch.no_grad():
        lower = verikit.bound(graph, Box(box.lower, box.upper), method=method, coefficients=rows).lower
    others = lower + torch.eye(data.classes)[y] * 1e9  # row y is 0 by construction
    return (others > 0).all(1)


def verify_sample(model, data: Dataset, eps: float, count: int, timeout: float) -> tuple[int, int, int]:
    """(unsat, sat, count) of `verify` on the first `count` test points' robustness at eps; a point the
    model misclassifies counts as sat without a call."""
    unsat = sat = 0
    with tempfile.TemporaryDirectory() as folder:
        graph = verikit.load_model(verikit.export_onnx(model, data.input_shape, Path(folder) / "m.onnx"))
        domain = Box(torch.full((1, data.x_test[0].numel()), data.domain[0], dtype=torch.float64),
                     torch.full((1, data.x_test[0].numel()), data.domain[1], dtype=torch.float64))
        for x, y in zip(data.x_test[:count], data.y_test[:count]):
            if int(model(x[None]).argmax()) != int(y):
                sat += 1
                continue
            spec = robustness_property(x.flatten().double(), int(y), eps * data.eps_scale, data.classes,
                                       domain=domain)
            status = verikit.verify(graph, spec, timeout=timeout).status
            unsat, sat = unsat + (status == "unsat"), sat + (status == "sat")
    return unsat, sat, count


def measure(name: str, data: Dataset, arguments) -> Row:
    """Train one trainer, time it, and certify the result."""
    started = time.perf_counter()
    schedule = {"warmup": 0.0, "ramp_end": 0.0} if arguments.full_eps else {}
    model = verikit.train(name, data, arguments.arch, epochs=arguments.epochs, eps=arguments.eps, seed=0, **schedule)
    row = Row(name, (time.perf_counter() - started) / arguments.epochs,
              float((model(data.x_test).argmax(1) == data.y_test).float().mean()))
    with torch.no_grad():
        for eps in (arguments.eps / 2, arguments.eps):
            for method in arguments.certify.split(","):
                mask = certified_mask(model, data, eps * data.eps_scale, method, arguments.test_limit)
                row.certified[f"{method}@{eps:g}"] = float(mask.float().mean())
    if arguments.verify_sample:
        row.verified = verify_sample(model, data, arguments.eps, arguments.verify_sample, arguments.verify_timeout)
    return row


def table(rows: list[Row]) -> str:
    """The markdown table, cost as a ratio to the first trainer's (standard's) seconds per epoch."""
    keys = list(rows[0].certified)
    lines = [f"| trainer | s/epoch | x {rows[0].trainer} | clean % | " + " | ".join(keys)
             + " | verify unsat / sat / n |",
             "|---|---:|---:|---:|" + "---:|" * len(keys) + "---|"]
    for row in rows:
        cells = " | ".join(f"{100 * row.certified[k]:.1f}" for k in keys)
        unsat, sat, count = row.verified
        lines.append(f"| {row.trainer} | {row.seconds:.2f} | {row.seconds / rows[0].seconds:.1f} | "
                     f"{100 * row.clean:.1f} | {cells} | {unsat} / {sat} / {count} |")
    return "\n".join(lines)


def plot(rows: list[Row], eps: float, path: str) -> None:
    """Certified accuracy at eps (each certifying method, verify's sample) and the cost ratio, one group
    per trainer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 1.4]})
    names = [row.trainer for row in rows]
    series = {"clean": [r.clean for r in rows]}
    series.update({key: [r.certified[key] for r in rows] for key in rows[0].certified if key.endswith(f"@{eps:g}")})
    if any(r.verified[2] for r in rows):
        series[f"verify@{eps:g} (sample)"] = [r.verified[0] / max(r.verified[2], 1) for r in rows]
    width = 0.8 / len(series)
    for index, (label, values) in enumerate(series.items()):
        left.bar([i + index * width for i in range(len(rows))], [100 * v for v in values], width, label=label)
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], names)
    left.set_ylabel("% of test inputs")
    left.set_ylim(0, 120)
    left.legend(fontsize=8, ncol=len(series), loc="upper center")
    right.barh(names, [r.seconds / rows[0].seconds for r in rows])
    right.set_xlabel(f"seconds per epoch, x {rows[0].trainer}")
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata={"Software": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--arch", default="mnist-small")
    parser.add_argument("--trainers", default=",".join(TRAINERS), help="comma-separated, standard first")
    parser.add_argument("--certify", default="ibp,crown", help="bound methods certifying the test split")
    parser.add_argument("--test-limit", type=int, help="certify only the first N test inputs (default all)")
    parser.add_argument("--verify-sample", type=int, default=20, help="test points given to `verify` (0: none)")
    parser.add_argument("--verify-timeout", type=float, default=10.0)
    parser.add_argument("--plot", help="write the figure here (.png or .svg)")
    parser.add_argument("--full-eps", action="store_true",
                        help="no warm-up or ramp: every step at the target eps (timing pgd-at; crown-ibp is then pure "
                             "ibp, its beta being 0 at the target eps)")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    data = load_data(arguments.data, seed=0)
    verikit.train("standard", data, arguments.arch, epochs=1, eps=arguments.eps, seed=0)  # warm-up, not timed
    rows = []
    for name in arguments.trainers.split(","):
        rows.append(measure(name, data, arguments))
        print(f"{name}: done ({rows[-1].seconds:.2f} s/epoch)", flush=True)
    print(table(rows))
    if arguments.plot:
        plot(rows, arguments.eps, arguments.plot)


if __name__ == "__main__":
    main()
