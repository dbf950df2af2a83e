"""A whole comparison: read the set, check the output folder, measure what is not yet recorded, import
other tools' results, then write the summary (DIR/summary.md) and the plots (DIR/plots/)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from verikit.compare.methods import MethodChoice, check_methods
from verikit.compare.peers import PeerResult, instance_name, read_peer_results, restrict
from verikit.compare.records import CSV_NAME, Record
from verikit.compare.runner import pending, run_tasks
from verikit.compare.tasks import Settings, Task, read_set
from verikit.errors import VerikitError

SUMMARY_NAME = "summary.md"


@dataclass
class Outcome:
    """What a comparison produced: every record in DIR, the imported results, the summary and plots."""

    records: list[Record]
    peers: list[PeerResult]
    tables: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)


def plan(set_path: str | Path, methods: list[MethodChoice] | None, settings: Settings,
         mode_given: bool = True) -> tuple[list[Task], list[MethodChoice]]:
    """Every measurement of the set (a YAML experiment brings its own methods and settings), checked."""
    set_path = Path(set_path)
    if set_path.suffix.lower() in (".yaml", ".yml"):
        from verikit.compare.experiment import read_experiment

        tasks, methods, settings = read_experiment(set_path, methods, settings, mode_given)
    elif methods is None:
        raise VerikitError("no methods to compare", place="--methods", fix="give e.g. --methods ibp,crown")
    else:
        tasks = read_set(set_path, methods, settings)
    check_methods(methods, settings.mode)
    return tasks, methods


def check_out(out: str | Path, inputs: list[str | Path]) -> Path:
    """DIR is a new folder or one `compare` wrote (with its records.csv), and none of its outputs is
    an input: nothing outside DIR, and no file of the user's inside it, is ever written."""
    from verikit.results import same_file

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VerikitError("is a file, not a folder", path=str(out), place="--out", fix="give a folder name")
    if out.is_dir() and any(out.iterdir()) and not (out / CSV_NAME).is_file():
        raise VerikitError("the folder holds other files, and no records of `verikit compare`", path=str(out),
                           place="--out", fix="give a new folder (it is created), or one `compare` wrote")
    for source in inputs:
        if Path(source).resolve().is_relative_to(out.resolve()) and any(
                same_file(source, out / name) for name in (CSV_NAME, "records.jsonl", SUMMARY_NAME)):
            raise VerikitError(f"would overwrite the input {source}", path=str(out), place="--out",
                               fix="give another folder")
    return out


def import_results(imports: list[tuple[str, Path]], tasks: list[Task]) -> list[PeerResult]:
    """The imported tools' results, for the set's instances only where the set lists spec files."""
    peers = [result for tool, path in imports for result in read_peer_results(tool, path)]
    if tasks and all(task.index is None for task in tasks):
        peers = restrict(peers, {instance_name(task.model, task.spec) for task in tasks})
    return peers


def in_task_order(records: list[Record], tasks: list[Task]) -> list[Record]:
    """The records sorted as the set lists its measurements (the files hold them as they finished)."""
    order = {task.key(): index for index, task in enumerate(tasks)}
    return sorted(records, key=lambda r: (order.get(r.key(), len(order)), r.row or 0))


def compare(set_path: str | Path, out: str | Path, methods: list[MethodChoice] | None = None,
            settings: Settings = Settings(), mode_given: bool = True, workers: int = 1, limit: int | None = None,
            imports: list[tuple[str, Path]] = (), plots: bool = True,
            on_records: Callable[[list[Record]], None] | None = None,
            on_plan: Callable[[int, int, int], None] | None = None, scheduler: str | None = None) -> Outcome:
    """Run the comparison (module doc); `limit`: at most that many new measurements (the rest wait for
    a later run: it resumes); `on_plan(total, recorded, to_run)` is told the counts before the first one;
    `scheduler`: on a Dask cluster instead of `workers` processes (verikit.scale)."""
    from verikit.compare.summary import markdown, summarize

    tasks, methods = plan(set_path, methods, settings, mode_given)
    peers = import_results(list(imports), tasks)
    out = check_out(out, [set_path, *(path for _, path in imports)])
    if plots:
        from verikit.compare.plots import _pyplot

        _pyplot()  # a missing matplotlib is reported before any measurement
    if on_plan is not None:
        waiting = len(pending(tasks, out)) if out.is_dir() else len({task.key() for task in tasks})
        on_plan(len(tasks), len(tasks) - waiting, waiting if limit is None else min(waiting, limit))
    records = in_task_order(run_tasks(tasks, out, workers, limit, on_records, scheduler), tasks)
    outcome = Outcome(records, peers)
    outcome.tables, outcome.notes = summarize(records, peers)
    if plots:
        from verikit.compare.plots import write_plots

        outcome.plots = write_plots(records, peers, out, [m.label for m in methods])
    (out / SUMMARY_NAME).write_text(markdown(outcome.tables, outcome.notes, outcome.plots), encoding="utf-8")
    return outcome
