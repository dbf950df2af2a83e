"""The Align experiments (seed-papers.md 6.5, 7.4) shrunk to a 2-core CPU: test accuracy vs width for every
rule, a low-data sweep, the RNN Add task's loss vs width and the alignment score vs width; markdown tables
on stdout, a JSON of every figure and a four-panel plot.

    python benchmarks/align_sweep.py                       # the README's run
    python benchmarks/align_sweep.py --widths 8,32 --epochs 2 --sizes 50,all --rnn-widths 8 --rnn-epochs 1

Every run uses the same seed (weights, batch order, feedback); the low-data runs all take the same number
of SGD steps as one full-data run (`--epochs` x steps a epoch), so small sets are not under-trained.
Seconds are wall-clock of one process with one torch thread, reported as ratios to backprop's; an untimed
one-epoch run comes first, so no rule pays torch's warm-up.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from verikit.trainers.align.alignment import measure_alignment
from verikit.trainers.align.network import batch_statistics_accuracy
from verikit.trainers.align.plugin import AlignOptions
from verikit.trainers.align.recurrent import (RECURRENT_RULES, RecurrentOptions, ReluRNN, add_task,
                                              train_recurrent)
from verikit.trainers.architectures import build
from verikit.trainers.data import Dataset, load_data
from verikit.trainers.loop import accuracy
from verikit.trainers.run import get_trainer

RULES = ("backprop", "align-zero", "align-ada", "align-prop", "fa", "dfa", "last-layer")


def run_rule(rule: str, data: Dataset, width: int, options: AlignOptions) -> dict:
    """Train one NTK conv net; its test accuracy with population and with batch statistics, and seconds."""
    model = build(f"ntk-conv:width={width}", data.input_shape, data.classes, options.seed)
    started = time.perf_counter()
    get_trainer(rule).train(model, data, options)
    seconds = time.perf_counter() - started
    return {"rule": rule, "width": width, "train": len(data.y_train), "seconds": seconds,
            "population": accuracy(model, data.x_test, data.y_test),
            "batch_statistics": batch_statistics_accuracy(model, data.x_test, data.y_test, options.batch_size)}


def width_sweep(data: Dataset, widths: list[int], rules: list[str], options: AlignOptions) -> list[dict]:
    rows = []
    for width in widths:
        for rule in rules:
            rows.append(run_rule(rule, data, width, options))
            print(f"  width {width} {rule}: {rows[-1]['population']:.3f} ({rows[-1]['seconds']:.1f} s)", flush=True)
    return rows


def low_data_sweep(data: Dataset, sizes: list[int], rules: list[str], width: int, options: AlignOptions) -> list[dict]:
    """Training sets of the first n training examples, each trained for the same number of steps."""
    steps = options.epochs * (len(data.y_train) // options.batch_size)
    rows = []
    for size in sizes:
        subset = dataclasses.replace(data, x_train=data.x_train[:size], y_train=data.y_train[:size])
        per_epoch = size // min(options.batch_size, size)
        epochs = math.ceil(steps / per_epoch)
        for rule in rules:
            rows.append(run_rule(rule, subset, width, dataclasses.replace(options, epochs=epochs)))
            print(f"  n {size} {rule}: {rows[-1]['population']:.3f}", flush=True)
    return rows


def alignment_sweep(data: Dataset, widths: list[int], options: AlignOptions) -> list[dict]:
    rows = []
    for width in widths:
        model = build(f"ntk-conv:width={width}", data.input_shape, data.classes, options.seed)
        result = measure_alignment(model, data, options)
        rows.append({"width": width, "scores": result.scores, "controls": result.controls})
        print(f"  width {width}: {[round(s, 3) for s in result.scores]}", flush=True)
    return rows


def recurrent_sweep(widths: list[int], options: RecurrentOptions, length: int) -> tuple[list[dict], float]:
    task = add_task(length=length)
    rows = []
    for width in widths:
        for rule in RECURRENT_RULES:
            torch.manual_seed(options.seed)
            started = time.perf_counter()
            result = train_recurrent(rule, ReluRNN(width), task, options)
            rows.append({"rule": rule, "width": width, "seconds": time.perf_counter() - started, **result})
            print(f"  rnn width {width} {rule}: {result['best_test_loss']:.3f}", flush=True)
    return rows, task.chance_loss()


def table(rows: list[dict], column: str, key: str, rules, digits: int = 3) -> str:
    """A markdown table: one line per value of `column`, one column per rule, cells rows[key]."""
    values = sorted({row[column] for row in rows})
    lines = [f"| {column} | " + " | ".join(rules) + " |", "|---" * (len(rules) + 1) + "|"]
    for value in values:
        cells = {row["rule"]: row[key] for row in rows if row[column] == value}
        lines.append(f"| {value} | " + " | ".join(f"{cells[r]:.{digits}f}" if r in cells else "" for r in rules)
                     + " |")
    return "\n".join(lines)


def cost_table(rows: list[dict], rules) -> str:
    """Seconds of each rule as a ratio to backprop's at the same width (the same process)."""
    ratios = []
    for row in rows:
        base = next(r["seconds"] for r in rows if r["width"] == row["width"] and r["rule"] == "backprop")
        ratios.append({**row, "ratio": row["seconds"] / base})
    return table(ratios, "width", "ratio", rules, digits=2)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    panels = [(results["widths"], "width", "population", "test accuracy (population BN)", True),
              (results["low_data"], "train", "population", "test accuracy, low data", True),
              (results["recurrent"], "width", "best_test_loss", "Add task: best test loss", True)]
    for axis, (rows, column, key, title, logx) in zip(axes, panels):
        for rule in dict.fromkeys(row["rule"] for row in rows):
            mine = sorted((row[column], row[key]) for row in rows if row["rule"] == rule)
            axis.plot(*zip(*mine), marker="o", label=rule, color=f"C{RULES.index(rule)}")
        axis.set(title=title, xlabel=column, xscale="log" if logx else "linear")
        axis.legend(fontsize=7)
    axes[2].axhline(results["chance_loss"], color="grey", linestyle=":", label="chance")
    rows = results["alignment"]
    for layer in range(len(rows[0]["scores"]) if rows else 0):
        widths = [r["width"] for r in rows]
        axes[3].plot(widths, [r["scores"][layer] for r in rows], marker="o", label=f"conv {layer + 1}")
        axes[3].plot(widths, [r["controls"][layer] for r in rows], linestyle=":", label=f"conv {layer + 1} shuffled")
    axes[3].set(title="alignment score (backprop vs theory)", xlabel="width", xscale="log")
    axes[3].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def numbers(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--widths", default="8,16,32,64,128")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5.0)
    parser.add_argument("--sizes", default="50,150,450,all", help="low-data training-set sizes ('all': whole)")
    parser.add_argument("--low-data-width", type=int, default=32)
    parser.add_argument("--low-data-rules", default="backprop,align-zero,align-ada,fa,dfa,last-layer")
    parser.add_argument("--alignment-widths", default="8,16,32,64,128")
    parser.add_argument("--rnn-widths", default="8,32,128,512,1024")
    parser.add_argument("--rnn-epochs", type=int, default=10)
    parser.add_argument("--rnn-length", type=int, default=50)
    parser.add_argument("--rnn-lr", type=float, default=3e-3)
    parser.add_argument("--out", default="benchmarks/results/align_sweep")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    data = load_data(arguments.data, seed=0)
    options = AlignOptions(epochs=arguments.epochs, lr=arguments.lr, batch_size=100, seed=0)
    rules = arguments.rules.split(",")
    sizes = [len(data.y_train) if s == "all" else int(s) for s in arguments.sizes.split(",")]
    run_rule("backprop", data, 8, dataclasses.replace(options, epochs=1))  # warm-up, not reported
    started = time.perf_counter()
    print("width sweep", flush=True)
    results = {"widths": width_sweep(data, numbers(arguments.widths), rules, options)}
    print("low-data sweep", flush=True)
    results["low_data"] = low_data_sweep(data, sizes, arguments.low_data_rules.split(","),
                                         arguments.low_data_width, options)
    print("alignment", flush=True)
    results["alignment"] = alignment_sweep(data, numbers(arguments.alignment_widths), options)
    print("recurrent", flush=True)
    rnn = RecurrentOptions(epochs=arguments.rnn_epochs, lr=arguments.rnn_lr)
    results["recurrent"], results["chance_loss"] = recurrent_sweep(numbers(arguments.rnn_widths), rnn,
                                                                   arguments.rnn_length)
    results["seconds"] = time.perf_counter() - started
    report(results, rules, arguments)


def report(results: dict, rules: list[str], arguments) -> None:
    out = Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**results, "arguments": vars(arguments)}, indent=1))
    plot(results, out.with_suffix(".png"))
    low_rules = arguments.low_data_rules.split(",")
    print(f"\n### Test accuracy vs width ({arguments.data}, population statistics)\n")
    print(table(results["widths"], "width", "population", rules))
    print("\n### The same with batch statistics (the reference's test-time batch norm)\n")
    print(table(results["widths"], "width", "batch_statistics", rules))
    print("\n### Seconds of a run as a ratio to backprop's\n")
    print(cost_table(results["widths"], rules))
    print(f"\n### Low data (width {arguments.low_data_width}, population statistics)\n")
    print(table(results["low_data"], "train", "population", low_rules))
    print("\n### Alignment score per conv (shuffled control in brackets)\n")
    print("| width | conv 1 | conv 2 | conv 3 |\n|---|---|---|---|")
    for row in results["alignment"]:
        print(f"| {row['width']} | " + " | ".join(f"{s:.3f} ({c:.3f})" for s, c in zip(row["scores"], row["controls"]))
              + " |")
    print(f"\n### Add task, best test loss (chance {results['chance_loss']:.3f})\n")
    print(table(results["recurrent"], "width", "best_test_loss", list(RECURRENT_RULES)))
    print(f"\ntotal {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
