"""Records of `verikit compare`: one row per measurement, written as tidy CSV and JSON lines.

A measurement is one method on one (model, spec or input, norm, eps); in `bounds` mode it gives one
record per row `c . y - d` of the spec (the rows share the measurement's time and memory). The files
are appended to as measurements finish, so an interrupted run resumes where it stopped (`done_keys`).
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

from verikit.errors import VerikitError

CSV_NAME, JSONL_NAME = "records.csv", "records.jsonl"


@dataclass
class Record:
    """One measurement (or, in bounds mode, one spec row of it). Empty strings / None where a value
    does not apply to the mode."""

    mode: str  # bounds | radius | verdicts
    model: str  # the ONNX file
    spec: str  # the spec file, or `inputs.npy#k` (the k-th input of an experiment)
    norm: str  # inf | 2 | 1, or "" for a spec file's own region
    eps: float | None  # the ball's radius (experiments' bounds and verdicts), else None
    method: str  # the method's label as asked for (`crown`, `ibp+crown`, `cnn-cert:mode=ada`)
    label: int | None = None  # the class kept (radius; experiments), None for spec files
    row: int | None = None  # bounds: the row's index over the spec's regions and clauses
    lower: float | None = None  # bounds: lower bound of the row's c.y - d (> 0 refutes its clause)
    upper: float | None = None  # bounds: upper bound of it
    certified: float | None = None  # radius: largest radius certified
    upper_bracket: float | None = None  # radius: smallest radius tried that did not certify
    attack_radius: float | None = None  # radius: distance of the closest adversarial input found
    verdict: str = ""  # verdicts: sat | unsat | unknown | timeout | error
    decided_by: str = ""  # verdicts: the method that decided
    seconds: float = 0.0  # wall time of the measurement (model loading excluded)
    peak_rss_mib: float = 0.0  # highest resident memory of the measuring process during it
    rss_growth_mib: float = 0.0  # that peak minus the resident memory when it started
    options: str = "{}"  # JSON: each method's options dataclass as a dict
    verikit_version: str = ""
    git_commit: str = ""
    machine: str = ""
    error: str = ""  # a measurement that failed: the first line of why

    def key(self) -> tuple[str, str, str, str, str, str]:
        """What identifies the measurement in a resumed run."""
        return measurement_key(self.mode, self.model, self.spec, self.norm, self.eps, self.method)


COLUMNS = tuple(f.name for f in fields(Record))


def measurement_key(mode: str, model: str, spec: str, norm: str, eps: float | None, method: str) -> tuple:
    """The resume key: mode, model, spec or input, norm, eps (as text, exactly), method."""
    return (mode, model, spec, norm, "" if eps is None else repr(float(eps)), method)


@lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """verikit's version, the git commit of its checkout (if any) and the machine, for every record."""
    from verikit import __version__

    return {"verikit_version": __version__, "git_commit": _git_commit(),
            "machine": f"{platform.platform()}; {os.cpu_count()} CPUs; Python {platform.python_version()}"}


def _git_commit() -> str:
    """The short commit of the checkout verikit runs from, with `+dirty` for uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    if commit.returncode != 0:
        return ""
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def read_records(folder: str | Path) -> list[Record]:
    """The records already in folder/records.csv ([] when there is none); another file of that name
    is a clear error, never overwritten."""
    path = Path(folder) / CSV_NAME
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise VerikitError("this file is not a records file of `verikit compare` (its columns differ)",
                           path=str(path), place="line 1", fix="give --out a new folder, or one `compare` wrote")
    return [_from_row(row) for row in reader]


def _from_row(row: dict[str, str]) -> Record:
    """A CSV row back as a Record, each cell in its field's type."""
    values = {}
    for field in fields(Record):
        text = row[field.name]
        if field.type in ("float | None", "int | None"):
            values[field.name] = None if text == "" else (int(text) if "int" in field.type else float(text))
        elif field.type == "float":
            values[field.name] = float(text)
        else:
            values[field.name] = text
    return Record(**values)


def done_keys(records: list[Record]) -> set[tuple]:
    return {record.key() for record in records}


class RecordWriter:
    """Appends records to DIR/records.csv and DIR/records.jsonl, flushed after each measurement."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        new = not (folder / CSV_NAME).is_file() or not (folder / CSV_NAME).read_text(encoding="utf-8").strip()
        self.csv_file = open(folder / CSV_NAME, "w" if new else "a", newline="", encoding="utf-8")
        self.jsonl_file = open(folder / JSONL_NAME, "w" if new else "a", encoding="utf-8")
        self.writer = csv.DictWriter(self.csv_file, fieldnames=COLUMNS)
        if new:
            self.writer.writeheader()

    def write(self, records: list[Record]) -> None:
        for record in records:
            row = asdict(record)
            self.writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
            self.jsonl_file.write(json.dumps(row) + "\n")
        self.csv_file.flush()
        self.jsonl_file.flush()

    def close(self) -> None:
        self.csv_file.close()
        self.jsonl_file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
