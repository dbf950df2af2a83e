"""Other verifiers' per-instance results (`--import TOOL=FILE`), to show beside verikit's methods.

Two kinds of file are read:
- a results file with the columns onnx, vnnlib, a verdict (`result` or `verdict`: sat, unsat, unknown,
  timeout, error; VNN-COMP's `violated` / `holds` too) and seconds (`seconds`, `time` or `time_s`), as
  ../shared/benchmarks/peers/*_results.csv and `verikit run`'s results CSV;
- a suite's instances.csv with a `TOOL_s` column (`abcrown_s`, `nnenum_s`, `fastest_s`): the seconds of
  each instance that tool solved (empty: not solved), the verdict from its `expected` column.
Such figures come from other machines unless measured beside verikit (`OTHER_MACHINE_NOTE`).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from verikit.errors import SpecError

VERDICT_WORDS = {"sat": "sat", "unsat": "unsat", "violated": "sat", "holds": "unsat", "unknown": "unknown",
                 "timeout": "timeout", "error": "error", "": "unknown", "disputed": "disputed"}
SOLVED = ("sat", "unsat", "disputed")  # disputed: an instances.csv's expected answer that tools disagree on
OTHER_MACHINE_NOTE = ("imported results ({tools}) were measured elsewhere: their times compare with "
                      "verikit's only when measured on the same machine, in the same hour")


@dataclass(frozen=True)
class PeerResult:
    """One instance as another tool answered it."""

    tool: str
    onnx: str
    vnnlib: str
    verdict: str
    seconds: float | None  # None: not solved (no time given)
    source: str  # the file it came from

    @property
    def solved(self) -> bool:
        return self.verdict in SOLVED and self.seconds is not None

    def instance(self) -> tuple[str, str]:
        return instance_name(self.onnx, self.vnnlib)


def instance_name(onnx: str, vnnlib: str) -> tuple[str, str]:
    """How an instance is matched across tools: the file names of its model and spec."""
    return Path(onnx).name, Path(vnnlib).name


def parse_import(text: str) -> tuple[str, Path]:
    """`TOOL=FILE` of --import, checked."""
    tool, equals, file = text.partition("=")
    if not equals or not tool.strip() or not file.strip():
        raise SpecError(f"bad --import {text!r}", place="--import",
                        fix="give TOOL=FILE, e.g. --import abcrown=abcrown_results.csv")
    return tool.strip(), Path(file.strip())


def read_peer_results(tool: str, path: str | Path) -> list[PeerResult]:
    """Every row of a tool's results file (module doc); a malformed row is one error naming its line."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("file not found", path=str(path), place="--import", fix="give an existing results CSV")
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip().lower() for name in reader.fieldnames or ()]
    verdict_column = next((c for c in ("result", "verdict") if c in header), None)
    seconds_column = next((c for c in ("seconds", "time", "time_s") if c in header), None)
    if verdict_column is None and f"{tool.lower()}_s" in header:
        verdict_column, seconds_column = "expected", f"{tool.lower()}_s"
    if not {"onnx", "vnnlib"} <= set(header) or verdict_column is None or seconds_column is None:
        raise SpecError(f"its columns {','.join(header)} do not name onnx, vnnlib, a verdict (result) and "
                        f"seconds, nor a {tool}_s column", path=str(path), place="line 1",
                        fix="give a results CSV (onnx,vnnlib,result,seconds) or an instances.csv with TOOL_s")
    reader.fieldnames = header
    results = []
    for number, row in enumerate(reader, start=2):
        results.append(_row(tool, row, verdict_column, seconds_column, path, number))
    return results


def _row(tool: str, row: dict, verdict_column: str, seconds_column: str, path: Path, number: int) -> PeerResult:
    """One row as a PeerResult, each cell checked."""
    def bad(message: str, fix: str) -> SpecError:
        return SpecError(message, path=str(path), place=f"line {number}", fix=fix)

    if None in row:
        raise bad(f"{len(row[None])} more cell(s) than the header has columns", "one cell a column")
    onnx, vnnlib = (row.get("onnx") or "").strip(), (row.get("vnnlib") or "").strip()
    if not onnx or not vnnlib:
        raise bad("the onnx or vnnlib cell is empty", "each row names a model and a spec")
    word = (row.get(verdict_column) or "").strip().lower()
    if word not in VERDICT_WORDS:
        raise bad(f"unknown verdict {word!r}", f"use one of {', '.join(w for w in VERDICT_WORDS if w)}")
    seconds_text = (row.get(seconds_column) or "").strip()
    seconds = None
    if seconds_text:
        try:
            seconds = float(seconds_text)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise bad(f"bad seconds {seconds_text!r}", "the time column holds seconds, a number >= 0")
    verdict = VERDICT_WORDS[word]
    if verdict_column == "expected" and seconds is None:
        verdict = "unknown"  # the tool did not solve it
    return PeerResult(tool, onnx, vnnlib, verdict, seconds, str(path))


def restrict(results: list[PeerResult], instances: set[tuple[str, str]] | None) -> list[PeerResult]:
    """Only the results of the given instances (matched by file names); all of them when None."""
    if instances is None:
        return results
    return [r for r in results if r.instance() in instances]
