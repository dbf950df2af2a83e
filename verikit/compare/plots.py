"""Plots of a comparison, as PNG and SVG under DIR/plots/ (matplotlib, headless, reproducible: a fixed
`svg.hashsalt` and no dates in the files' metadata). matplotlib is the optional `plots` extra."""
from __future__ import annotations

import statistics
import textwrap
from collections import defaultdict
from pathlib import Path

from verikit.compare.peers import OTHER_MACHINE_NOTE, PeerResult
from verikit.compare.records import Record
from verikit.compare.summary import bound_gaps, measurements
from verikit.errors import VerikitError


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or one clear error naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise VerikitError("the plots need matplotlib, which is not installed", place="plots",
                           fix="pip install 'verikit[plots]' (or pip install matplotlib), or pass --no-plots") from None
    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "verikit-compare", "figure.dpi": 100})
    import matplotlib.pyplot as plt

    return plt


def write_plots(records: list[Record], peers: list[PeerResult], folder: str | Path,
                methods: list[str] | None = None) -> list[str]:
    """Every plot the records call for (by mode), written to folder/plots; returns their names."""
    plt = _pyplot()
    folder = Path(folder) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    order = methods or list(dict.fromkeys(r.method for r in records))
    modes = {r.mode for r in records if not r.error}
    figures = {}
    if records:
        figures["time_per_method"] = _time_per_method(plt, records, order)
    if "bounds" in modes:
        figures["tightness_per_method"] = _tightness_per_method(plt, records, order)
        figures["tightness_vs_time"] = _tightness_vs_time(plt, records, order)
    if "radius" in modes:
        figures["radius_per_method"] = _radius_per_method(plt, records, order)
        figures["radius_vs_time"] = _radius_vs_time(plt, records, order)
    if "verdicts" in modes or peers:
        figures["cactus"] = _cactus(plt, records, peers, order)
    for name, figure in figures.items():
        figure.savefig(folder / f"{name}.png", metadata={"Software": None})
        figure.savefig(folder / f"{name}.svg", metadata={"Date": None, "Creator": None})
        plt.close(figure)
    return list(figures)


def _means(records: list[Record], value) -> dict[str, float]:
    """Per method, the mean of value(record) over its successful measurements."""
    groups = defaultdict(list)
    for record in records:
        if not record.error:
            groups[record.method].append(value(record))
    return {method: statistics.fmean(values) for method, values in groups.items() if values}


def _bars(plt, order: list[str], values: dict[str, float], ylabel: str, title: str, log: bool = False):
    figure, axes = plt.subplots(figsize=(6, 3.5))
    shown = [m for m in order if m in values]
    axes.bar(shown, [values[m] for m in shown], color="tab:blue")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if log:
        axes.set_yscale("log")
    axes.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    return figure


def _time_per_method(plt, records, order):
    seconds = _means(measurements(records), lambda r: max(r.seconds, 1e-6))
    return _bars(plt, order, seconds, "seconds per measurement (mean)", "time per method", log=True)


def _tightness_per_method(plt, records, order):
    gaps = bound_gaps(records)
    values = _means([r for r in records if r.mode == "bounds"], lambda r: gaps[id(r)])
    return _bars(plt, order, values, "mean gap to the tightest lower bound", "bound tightness (0 = best)")


def _scatter(plt, order, x: dict[str, float], y: dict[str, float], ylabel: str, title: str):
    figure, axes = plt.subplots(figsize=(5, 4))
    for method in order:
        if method in x and method in y:
            axes.scatter(x[method], y[method], label=method)
            axes.annotate(method, (x[method], y[method]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("seconds per measurement (mean)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    figure.tight_layout()
    return figure


def _tightness_vs_time(plt, records, order):
    gaps = bound_gaps(records)
    bounds = [r for r in records if r.mode == "bounds"]
    return _scatter(plt, order, _means(measurements(bounds), lambda r: max(r.seconds, 1e-6)),
                    _means(bounds, lambda r: gaps[id(r)]), "mean gap to the tightest (lower is better)",
                    "tightness vs time")


def _radius_vs_time(plt, records, order):
    radius = [r for r in records if r.mode == "radius"]
    return _scatter(plt, order, _means(radius, lambda r: max(r.seconds, 1e-6)), _means(radius, lambda r: r.certified),
                    "mean certified radius (higher is better)", "certified radius vs time")


def _radius_per_method(plt, records, order):
    """Grouped bars: mean certified radius per method, one group per norm."""
    radius = [r for r in records if r.mode == "radius" and not r.error]
    norms = sorted({r.norm for r in radius})
    figure, axes = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(1, len(norms))
    shown = [m for m in order if any(r.method == m for r in radius)]
    for k, norm in enumerate(norms):
        values = _means([r for r in radius if r.norm == norm], lambda r: r.certified)
        axes.bar([i + k * width for i in range(len(shown))], [values.get(m, 0.0) for m in shown], width,
                 label=f"L{norm}")
    axes.set_xticks([i + width * (len(norms) - 1) / 2 for i in range(len(shown))], shown, rotation=30)
    axes.set_ylabel("mean certified radius")
    axes.set_title("certified radius per method")
    axes.legend()
    figure.tight_layout()
    return figure


def _cactus(plt, records, peers, order):
    """Instances solved (sat or unsat) against time, log axis, as in the VNN-COMP reports."""
    series: dict[str, list[float]] = {}
    for method in order:
        times = [r.seconds for r in records if r.mode == "verdicts" and r.method == method
                 and r.verdict in ("sat", "unsat")]
        if any(r.mode == "verdicts" and r.method == method for r in records):
            series[method] = times
    for tool in dict.fromkeys(p.tool for p in peers):
        series[f"{tool} (imported)"] = [p.seconds for p in peers if p.tool == tool and p.solved]
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, times in series.items():
        times = sorted(max(t, 1e-3) for t in times)
        axes.step(times, range(1, len(times) + 1), where="post", label=f"{name} ({len(times)})",
                  linestyle="--" if name.endswith("(imported)") else "-")
    axes.set_xscale("log")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("instances solved")
    only_imported = all(name.endswith("(imported)") for name in series)
    axes.set_title("instances solved vs time" + (" (imported results only)" if only_imported else ""))
    axes.legend(fontsize=8)
    if peers:
        note = OTHER_MACHINE_NOTE.format(tools=", ".join(dict.fromkeys(p.tool for p in peers)))
        figure.text(0.01, 0.01, textwrap.fill(note, 110), fontsize=6, va="bottom")
        figure.tight_layout(rect=(0, 0.08, 1, 1))
    else:
        figure.tight_layout()
    return figure
