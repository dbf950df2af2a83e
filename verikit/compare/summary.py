"""The summary of a comparison: one table per mode (per method: its figures, mean seconds, peak
memory), imported tools' solved counts, and notes; shown with rich and written as Markdown."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from verikit.compare.peers import OTHER_MACHINE_NOTE, SOLVED, PeerResult
from verikit.compare.records import Record

TIGHTEST = 1e-6  # a lower bound within this (relative) of the row's best counts as the tightest


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)


def measurements(records: list[Record]) -> list[Record]:
    """One record per measurement (bounds mode has one per spec row), those that failed left out."""
    first = {}
    for record in records:
        if not record.error:
            first.setdefault(record.key(), record)
    return list(first.values())


def bound_gaps(records: list[Record]) -> dict[int, float]:
    """For each bounds record (by id()): its row's best lower bound over the methods minus its own
    (0 for the tightest method; the row is one spec row of one model, input, norm and eps)."""
    best: dict[tuple, float] = {}
    for record in records:
        if record.mode == "bounds" and not record.error:
            row = record.key()[:5] + (record.row,)
            best[row] = max(best.get(row, -math.inf), record.lower)
    return {id(r): best[r.key()[:5] + (r.row,)] - r.lower for r in records if r.mode == "bounds" and not r.error}


def per_method(records: list[Record], by_norm: bool = False) -> dict[tuple[str, str], list[Record]]:
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        groups[(record.method, record.norm if by_norm else "")].append(record)
    return groups


def bounds_table(records: list[Record]) -> Table:
    gaps = bound_gaps(records)
    table = Table("bounds: lower bound of c.y - d, gap to the tightest method on the same row",
                  ["method", "rows", "mean lower", "mean gap to best", "tightest on", "mean s", "peak MiB"])
    for (method, _), group in per_method([r for r in records if r.mode == "bounds"]).items():
        kept = [gaps[id(r)] for r in group if not r.error]
        lowers = [r.lower for r in group if not r.error]
        tight = sum(g <= TIGHTEST * (1 + abs(low)) for g, low in zip(kept, lowers))
        table.rows.append([method, str(len(kept)), _mean(lowers), _mean(kept), f"{tight}/{len(kept)}",
                           *_cost(group)])
    return table


def radius_table(records: list[Record]) -> Table:
    """Per model, norm and method: mean certified radius, attack radius, seconds, and the speed-up
    over the first method compared (CNN-Cert's tables: cnn-cert over fast-lin)."""
    radius = [r for r in records if r.mode == "radius"]
    first = radius[0].method if radius else ""
    table = Table("radius: certified radius (and PGD's upper bracket) per model and norm",
                  ["model", "norm", "method", "inputs", "mean certified", "mean attack radius", "mean s",
                   f"speed-up vs {first}", "peak MiB"])
    groups: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for record in radius:
        groups[(Path(record.model).stem, record.norm, record.method)].append(record)
    for (model, norm, method), group in groups.items():
        done = [r for r in group if not r.error]
        attacks = [r.attack_radius for r in done if r.attack_radius is not None and math.isfinite(r.attack_radius)]
        baseline = [r.seconds for r in groups.get((model, norm, first), []) if not r.error]
        seconds = [r.seconds for r in done]
        speed_up = (f"x{statistics.fmean(baseline) / statistics.fmean(seconds):.1f}"
                    if baseline and seconds and statistics.fmean(seconds) > 0 else "-")
        table.rows.append([model, norm, method, str(len(done)), _mean([r.certified for r in done]), _mean(attacks),
                           _cost(group)[0], speed_up, _cost(group)[1]])
    return table


def verdicts_table(records: list[Record], peers: list[PeerResult]) -> Table:
    table = Table("verdicts: instances solved (sat + unsat) and time",
                  ["method / tool", "instances", "solved", "sat", "unsat", "unsolved", "total s", "peak MiB"])
    for (method, _), group in per_method([r for r in records if r.mode == "verdicts"]).items():
        verdicts = [r.verdict or "error" for r in group]
        table.rows.append([method, str(len(group)), *_counts(verdicts), f"{sum(r.seconds for r in group):.2f}",
                           _cost(group)[1]])
    tools: dict[str, list[PeerResult]] = defaultdict(list)
    for result in peers:
        tools[result.tool].append(result)
    for tool, results in tools.items():
        verdicts = [r.verdict if r.solved else "unknown" for r in results]
        seconds = sum(r.seconds or 0.0 for r in results)
        table.rows.append([f"{tool} (imported)", str(len(results)), *_counts(verdicts), f"{seconds:.2f}", "-"])
    return table


def _counts(verdicts: list[str]) -> list[str]:
    solved = sum(v in SOLVED for v in verdicts)
    return [str(solved), str(verdicts.count("sat")), str(verdicts.count("unsat")), str(len(verdicts) - solved)]


def _cost(group: list[Record]) -> list[str]:
    """Mean seconds a measurement and the highest peak memory."""
    done = measurements(group)
    return [_mean([r.seconds for r in done], "{:.3f}"), f"{max((r.peak_rss_mib for r in done), default=0):.0f}"]


def _mean(values: list[float], form: str = "{:.6g}") -> str:
    return form.format(statistics.fmean(values)) if values else "-"


def summarize(records: list[Record], peers: list[PeerResult]) -> tuple[list[Table], list[str]]:
    """The tables of the modes the records hold, and the notes that go with them."""
    modes = {r.mode for r in records}
    tables = []
    if "bounds" in modes:
        tables.append(bounds_table(records))
    if "radius" in modes:
        tables.append(radius_table(records))
    if "verdicts" in modes or peers:
        tables.append(verdicts_table(records, peers))
    notes = []
    errors = [r for r in records if r.error]
    if errors:
        notes.append(f"{len(errors)} measurement(s) failed; their `error` column in records.csv says why "
                     f"(first: {errors[0].method} on {errors[0].spec}: {errors[0].error})")
    if peers:
        notes.append(OTHER_MACHINE_NOTE.format(tools=", ".join(sorted({p.tool for p in peers}))))
    if records:
        first = records[0]
        notes.append(f"verikit {first.verikit_version}, commit {first.git_commit or 'unknown'}, {first.machine}")
        notes.append("peak MiB: the highest resident memory of the measuring process, sampled every 2 ms "
                     "during each measurement")
    return tables, notes


def markdown(tables: list[Table], notes: list[str], plots: list[str]) -> str:
    lines = ["# verikit compare", ""]
    for table in tables:
        lines += [f"## {table.title}", "", "| " + " | ".join(table.columns) + " |",
                  "|" + "|".join("---" for _ in table.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines.append("")
    lines += [f"- {note}" for note in notes]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}](plots/{name}.png)" for name in plots]
    return "\n".join(lines) + "\n"


def show(tables: list[Table], notes: list[str], console) -> None:
    """The tables and notes on a rich console."""
    from rich.table import Table as RichTable

    for table in tables:
        shown = RichTable(*table.columns, title=table.title)
        for row in table.rows:
            shown.add_row(*row)
        console.print(shown)
    for note in notes:
        console.print(f"note: {note}")
