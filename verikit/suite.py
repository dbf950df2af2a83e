"""Run a whole benchmark suite (an instances.csv): one result file per instance plus a results CSV,
resumable, with a progress bar; local worker processes or a Dask cluster (verikit.scale)."""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from verikit.errors import SpecError, VerikitError

FIELDS = ("onnx", "vnnlib", "verdict", "seconds", "method", "expected", "agreement", "detail")
HEADER_HINT = "onnx,vnnlib,timeout_s[,expected]"
# Accepted values of the `expected` column: the verdicts, VNN-COMP's words for them, and `disputed`
# (benchmarks whose tools disagree), which like `unknown` is never compared.
EXPECTED = {"": "", "sat": "sat", "unsat": "unsat", "unknown": "unknown", "disputed": "disputed",
            "violated": "sat", "holds": "unsat"}


@dataclass(frozen=True)
class Instance:
    """One line of a suite: model, spec, timeout and (when known) the expected verdict."""

    onnx: str
    vnnlib: str
    timeout: float
    expected: str = ""


@dataclass
class SuiteOptions:
    """timeout_cap: at most this many seconds an instance; methods/attack/complete/seed as for verify;
    workers: local processes; scheduler: a Dask cluster instead (`local`, `local:N` or a scheduler's
    address, verikit.scale), with `grace` seconds past an instance's timeout before its worker is
    restarted, and the local cluster's dashboard served where `dashboard`."""

    timeout_cap: float | None = None
    methods: tuple[str, ...] | None = None
    attack: str | None = "pgd"
    complete: str | None = "bab"
    workers: int = 1
    results_dir: Path | None = None
    scheduler: str | None = None
    grace: float = 30.0
    dashboard: bool = False
    device: str = "cpu"
    seed: int = 0
    extra: dict = field(default_factory=dict)


def read_instances(path: str | Path) -> list[Instance]:
    """Instances of a VNN-COMP csv: with a header naming onnx and vnnlib (and timeout_s, expected), or
    without one (onnx,vnnlib,timeout rows). Paths are relative to the csv's folder."""
    path = Path(path)
    lines = _suite_lines(path)
    if not lines:
        raise SpecError("the suite has no instances", path=str(path), fix=f"list one per line: {HEADER_HINT}")
    first_number, first = lines[0]
    header = [cell.strip().lower() for cell in first]
    if "onnx" in header and "vnnlib" in header:
        rows = [(number, {name: (cells[i].strip() if i < len(cells) else "") for i, name in enumerate(header)})
                for number, cells in lines[1:]]
    elif _looks_like_header(first):
        raise SpecError(f"the first line {','.join(first)!r} looks like a header but does not name the columns "
                        "onnx and vnnlib", path=str(path), place=f"line {first_number}",
                        fix=f"start the file with the header {HEADER_HINT}, or give no header at all")
    else:
        rows = [(number, dict(zip(("onnx", "vnnlib", "timeout_s"), (c.strip() for c in cells))))
                for number, cells in lines]
    return [_instance(row, path, number) for number, row in rows]


def _suite_lines(path: Path) -> list[tuple[int, list[str]]]:
    """The suite's non-blank CSV lines with their line numbers (1-based)."""
    if not path.is_file():
        raise SpecError("file not found", path=str(path), fix="give the suite's instances.csv")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError(f"not UTF-8 text (byte {error.start})", path=str(path),
                        fix="give the suite's instances.csv, a UTF-8 CSV file") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        cells = next(csv.reader([line]), [])
        if any(cell.strip() for cell in cells):
            lines.append((number, cells))
    return lines


def _looks_like_header(cells: list[str]) -> bool:
    """A first line that names columns rather than files: neither of its first two cells has a '.' or a
    '/' (a model or spec file name has), or its third cell is not a number."""
    names_no_file = not any(("." in cell or "/" in cell) for cell in cells[:2])
    return names_no_file or (len(cells) > 2 and cells[2].strip() != "" and not _is_number(cells[2]))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _instance(row: dict[str, str], path: Path, number: int) -> Instance:
    """One suite row as an Instance, each cell checked (an error names the line)."""
    place = f"line {number}"
    for column in ("onnx", "vnnlib"):
        if not row.get(column):
            raise SpecError(f"the {column} column is empty", path=str(path), place=place,
                            fix=f"each line names a model and a spec: {HEADER_HINT}")
    text = row.get("timeout_s") or row.get("timeout") or "60"
    try:
        timeout = float(text)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise SpecError(f"bad timeout {text!r}", path=str(path), place=place,
                        fix="the timeout column holds seconds, a number above 0")
    expected = row.get("expected", "").strip().lower()
    if expected not in EXPECTED:
        raise SpecError(f"bad expected verdict {row.get('expected')!r}", path=str(path), place=place,
                        fix="the expected column holds sat, unsat, unknown, disputed or nothing")
    resolve = lambda p: str((path.parent / p).resolve()) if not Path(p).is_absolute() else p  # noqa: E731
    return Instance(resolve(row["onnx"]), resolve(row["vnnlib"]), timeout, EXPECTED[expected])


def agreement(verdict: str, expected: str) -> str:
    """'yes' / 'no' (a contradiction) / '' when there is nothing to compare."""
    if expected not in ("sat", "unsat") or verdict not in ("sat", "unsat"):
        return ""
    return "yes" if verdict == expected else "no"


def run_instance(instance: Instance, options: SuiteOptions) -> dict:
    """Verify one instance (model load included in the time) and write its result file."""
    from verikit.api import load_model, load_spec
    from verikit.results import write_result

    def load():
        graph = load_model(instance.onnx)
        return graph, load_spec(instance.vnnlib, graph)

    record, verdict = decide_instance(instance, options, load)
    if options.results_dir is not None:
        write_result(Path(options.results_dir) / result_name(instance), verdict)
    return record


def decide_instance(instance: Instance, options: SuiteOptions, load: Callable[[], tuple]) -> tuple[dict, object]:
    """Verify one instance whose (graph, property) `load` gives, its time counted: the results CSV's
    row and the Verdict (`error` where loading or a method's input check failed)."""
    from verikit.scale.cluster import set_threads

    set_threads()
    from verikit.methods.base import Verdict
    from verikit.pipeline import VerifyOptions, verify

    start = time.monotonic()
    timeout = instance_timeout(instance, options)
    try:
        graph, prop = load()
        remaining = max(0.1, timeout - (time.monotonic() - start))
        verdict = verify(graph, prop, VerifyOptions(timeout=remaining, methods=options.methods,
                                                    attack=options.attack, complete=options.complete,
                                                    device=options.device, seed=options.seed))
    except VerikitError as error:
        verdict = Verdict("error", detail=str(error).splitlines()[0])
    return instance_record(instance, verdict, time.monotonic() - start), verdict


def instance_timeout(instance: Instance, options: SuiteOptions) -> float:
    """The instance's seconds: its own timeout, at most the cap."""
    return min(instance.timeout, options.timeout_cap or instance.timeout)


def instance_record(instance: Instance, verdict, seconds: float) -> dict:
    """The results CSV's row of an instance's verdict."""
    return {"onnx": instance.onnx, "vnnlib": instance.vnnlib, "verdict": verdict.status,
            "seconds": f"{seconds:.3f}", "method": verdict.method, "expected": instance.expected,
            "agreement": agreement(verdict.status, instance.expected), "detail": verdict.detail}


def result_name(instance: Instance) -> str:
    return f"{Path(instance.onnx).stem}__{Path(instance.vnnlib).stem}.txt"


def read_results(out_csv: str | Path) -> list[dict[str, str]]:
    """The rows of a results CSV this module wrote ([] for a missing or empty file); anything else, a
    file that is not UTF-8 or has other columns, is a clear error rather than a KeyError later."""
    out_csv = Path(out_csv)
    if not out_csv.is_file():
        return []
    fix = "give a new file name, or a results CSV that `verikit run` wrote"
    try:
        text = out_csv.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise VerikitError(f"not a UTF-8 CSV file (byte {error.start})", path=str(out_csv), fix=fix) from None
    if not text.strip():
        return []
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != FIELDS:
        raise VerikitError(f"its columns are {','.join(reader.fieldnames or ())}, not those of a results CSV "
                           f"({','.join(FIELDS)})", path=str(out_csv), place="line 1", fix=fix)
    return list(reader)


def check_out_csv(out_csv: str | Path, suite: str | Path) -> None:
    """Refuse, before any instance runs, a results CSV that is the suite itself, lies in a missing
    directory, or is some other file (see read_results)."""
    from verikit.results import check_output_path

    check_output_path(out_csv, [suite], "--out")
    read_results(out_csv)


def done_instances(out_csv: Path, retry_errors: bool = False) -> set[tuple[str, str]]:
    """(onnx, vnnlib) of the instances already in the results CSV (but those that ended in `error`
    when `retry_errors`)."""
    return {(row["onnx"], row["vnnlib"]) for row in read_results(out_csv)
            if not (retry_errors and row["verdict"] == "error")}


def run_suite(instances: list[Instance], out_csv: str | Path, options: SuiteOptions,
              on_result: Callable[[dict], None] | None = None, retry_errors: bool = False) -> list[dict]:
    """Run every instance not already in out_csv, appending one CSV row as each finishes; with
    `retry_errors`, the rows that ended in `error` are dropped from out_csv and run again."""
    out_csv = Path(out_csv)
    if retry_errors:
        _drop_errors(out_csv)
    rows = read_results(out_csv)
    finished = {(row["onnx"], row["vnnlib"]) for row in rows}
    todo = [i for i in instances if (i.onnx, i.vnnlib) not in finished]
    if options.results_dir is not None:
        Path(options.results_dir).mkdir(parents=True, exist_ok=True)
    new_file = not rows
    records = []
    with open(out_csv, "a" if not new_file else "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for record in _execute(todo, options):
            writer.writerow(record)
            handle.flush()
            records.append(record)
            if on_result:
                on_result(record)
    return records


def _drop_errors(out_csv: Path) -> None:
    """Rewrite the results CSV without its `error` rows (atomically), so they run again."""
    from verikit.results import write_atomically

    rows = read_results(out_csv)
    kept = [row for row in rows if row["verdict"] != "error"]
    if len(kept) == len(rows):
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(kept)
    write_atomically(out_csv, text.getvalue())


def _execute(todo: list[Instance], options: SuiteOptions) -> Iterable[dict]:
    """Records of the instances as they finish: on a Dask cluster (verikit.scale), in local worker
    processes, or here. Leaving early (an interrupt) terminates the local workers at once."""
    if options.scheduler:
        from verikit.scale.suite_tasks import run_on_cluster

        yield from run_on_cluster(todo, options)
        return
    if options.workers <= 1:
        for instance in todo:
            yield run_instance(instance, options)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed as completed

    pool = ProcessPoolExecutor(options.workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(run_instance, i, options) for i in todo]
        for future in completed(futures):
            yield future.result()
    except BaseException:  # interrupted, or the caller stopped early: stop the instances running now
        _terminate_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate_workers(pool) -> None:
    """Terminate a process pool's workers (Python 3.14 has a method for it; before, its process table)."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def summarize(out_csv: str | Path) -> dict:
    """Counts per verdict, contradictions, errors and total seconds over every row of a results CSV."""
    rows = read_results(out_csv)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return {"instances": len(rows), "counts": counts,
            "contradictions": [r for r in rows if r["agreement"] == "no"],
            "errors": [r for r in rows if r["verdict"] == "error"],
            "seconds": sum(float(r["seconds"]) for r in rows)}


__all__ = ["Instance", "SuiteOptions", "read_instances", "run_suite", "summarize", "check_out_csv",
           "read_results", "asdict"]
