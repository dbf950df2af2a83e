"""Run a whole benchmark suite (an instances.csv): one result file per instance plus a results CSV,
resumable, with a progress bar; local worker processes or a Dask scheduler."""
from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

FIELDS = ("onnx", "vnnlib", "verdict", "seconds", "method", "expected", "agreement", "detail")


@dataclass(frozen=True)
class Instance:
    """One line of a suite: model, spec, timeout and (when known) the expected verdict."""

    onnx: str
    vnnlib: str
    timeout: float
    expected: str = ""


@dataclass
class SuiteOptions:
    """timeout_cap: at most this many seconds an instance; methods/attack/complete as for verify."""

    timeout_cap: float | None = None
    methods: tuple[str, ...] | None = None
    attack: str | None = "pgd"
    complete: str | None = "bab"
    workers: int = 1
    results_dir: Path | None = None
    scheduler: str | None = None  # a Dask scheduler address
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


def read_instances(path: str | Path) -> list[Instance]:
    """Instances of a VNN-COMP csv: with a header (onnx,vnnlib,timeout_s[,expected]) or without one."""
    from verikit.errors import SpecError

    path = Path(path)
    if not path.is_file():
        raise SpecError("file not found", path=str(path), fix="give the suite's instances.csv")
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "onnx" in header and "vnnlib" in header:
        index = {name: header.index(name) for name in header}
        rows = [{name: (r[i].strip() if i < len(r) else "") for name, i in index.items()} for r in rows[1:]]
    else:
        rows = [{"onnx": r[0].strip(), "vnnlib": r[1].strip(), "timeout_s": r[2].strip() if len(r) > 2 else ""}
                for r in rows]
    instances = []
    for number, row in enumerate(rows, start=2 if header else 1):
        try:
            timeout = float(row.get("timeout_s") or row.get("timeout") or 60)
        except ValueError:
            raise SpecError(f"bad timeout {row.get('timeout_s')!r}", path=str(path), place=f"line {number}",
                            fix="the third column is the timeout in seconds") from None
        resolve = lambda p: str((path.parent / p).resolve()) if not Path(p).is_absolute() else p  # noqa: E731
        instances.append(Instance(resolve(row["onnx"]), resolve(row["vnnlib"]), timeout, row.get("expected", "")))
    return instances


def agreement(verdict: str, expected: str) -> str:
    """'yes' / 'no' (a contradiction) / '' when there is nothing to compare."""
    if expected not in ("sat", "unsat") or verdict not in ("sat", "unsat"):
        return ""
    return "yes" if verdict == expected else "no"


def run_instance(instance: Instance, options: SuiteOptions) -> dict:
    """Verify one instance (model load included in the time) and write its result file."""
    import os

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("VERIKIT_THREADS", "1"))))
    from verikit.api import load_model, load_spec
    from verikit.errors import VerikitError
    from verikit.methods.base import Verdict
    from verikit.results import write_result
    from verikit.pipeline import VerifyOptions, verify

    start = time.monotonic()
    timeout = min(instance.timeout, options.timeout_cap or instance.timeout)
    try:
        graph = load_model(instance.onnx)
        prop = load_spec(instance.vnnlib, graph)
        remaining = max(0.1, timeout - (time.monotonic() - start))
        verdict = verify(graph, prop, VerifyOptions(timeout=remaining, methods=options.methods,
                                                    attack=options.attack, complete=options.complete,
                                                    device=options.device))
    except VerikitError as error:
        verdict = Verdict("error", detail=str(error).splitlines()[0])
    seconds = time.monotonic() - start
    if options.results_dir is not None:
        write_result(Path(options.results_dir) / result_name(instance), verdict)
    return {"onnx": instance.onnx, "vnnlib": instance.vnnlib, "verdict": verdict.status,
            "seconds": f"{seconds:.3f}", "method": verdict.method, "expected": instance.expected,
            "agreement": agreement(verdict.status, instance.expected), "detail": verdict.detail}


def result_name(instance: Instance) -> str:
    return f"{Path(instance.onnx).stem}__{Path(instance.vnnlib).stem}.txt"


def done_instances(out_csv: Path) -> set[tuple[str, str]]:
    if not out_csv.is_file():
        return set()
    with open(out_csv) as handle:
        return {(row["onnx"], row["vnnlib"]) for row in csv.DictReader(handle)}


def run_suite(instances: list[Instance], out_csv: str | Path, options: SuiteOptions,
              on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every instance not already in out_csv, appending one CSV row as each finishes."""
    out_csv = Path(out_csv)
    finished = done_instances(out_csv)
    todo = [i for i in instances if (i.onnx, i.vnnlib) not in finished]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    new_file = not out_csv.is_file()
    records = []
    with open(out_csv, "a", newline="") as handle:
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


def _execute(todo: list[Instance], options: SuiteOptions) -> Iterable[dict]:
    if options.scheduler:
        from dask.distributed import Client, as_completed

        client = Client(options.scheduler)
        futures = [client.submit(run_instance, i, options, pure=False) for i in todo]
        for future in as_completed(futures):
            yield future.result()
        return
    if options.workers <= 1:
        for instance in todo:
            yield run_instance(instance, options)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed as completed

    with ProcessPoolExecutor(options.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_instance, i, options) for i in todo]
        for future in completed(futures):
            yield future.result()


def summarize(out_csv: str | Path) -> dict:
    """Counts per verdict, contradictions and total seconds over every row of a results CSV."""
    with open(out_csv) as handle:
        rows = list(csv.DictReader(handle))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return {"instances": len(rows), "counts": counts,
            "contradictions": [r for r in rows if r["agreement"] == "no"],
            "seconds": sum(float(r["seconds"]) for r in rows)}


__all__ = ["Instance", "SuiteOptions", "read_instances", "run_suite", "summarize", "asdict"]
