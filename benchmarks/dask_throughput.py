"""Dask distributed against the local process pool, each pair measured in one run, one after the other:

1. `verikit run` on a sample of the ACAS Xu suite (capped timeouts): `--workers N` against
   `--scheduler local:N` (wall time from the command's start, pool or cluster start included);
2. the scheduling overhead per task: no-op tasks through a ProcessPoolExecutor and through the Dask
   executor (verikit.scale.executor, with its start announcements) on N processes;
3. one hard instance: `verikit verify --workers N` against `--scheduler local:N`.

    python benchmarks/dask_throughput.py [--sample 24] [--cap 10] [--workers 2] [--hard 3_3:prop_2]
"""
from __future__ import annotations

import argparse
import csv
import operator
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ACAS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "acasxu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=24, help="ACAS Xu instances: every k-th of the suite (0: skip)")
    parser.add_argument("--cap", type=float, default=10.0, help="seconds an instance at most")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noop", type=int, default=400, help="no-op tasks for the overhead figure (0: skip)")
    parser.add_argument("--hard", default="3_3:prop_2", help="NET:PROP of the hard instance ('' to skip)")
    parser.add_argument("--hard-timeout", type=float, default=240.0)
    args = parser.parse_args()
    if args.sample:
        suite_throughput(args)
    if args.noop:
        overhead(args.noop, args.workers)
    if args.hard:
        hard_instance(args.hard, args.hard_timeout, args.workers)


def suite_throughput(args) -> None:
    """`verikit run` on the sample, pool then Dask, as a table (and the instances whose verdicts differ)."""
    with tempfile.TemporaryDirectory() as folder:
        suite = sample_suite(Path(folder), args.sample)
        print(f"ACAS Xu, {args.sample} instances (every {186 // args.sample}-th), {args.cap:g} s cap, "
              f"{args.workers} processes\n")
        print("| executor | wall s | instances / s | sum of task s | worker s outside tasks, per task | verdicts |")
        print("|---|---:|---:|---:|---:|---|")
        pool = suite_run(suite, Path(folder) / "pool.csv", args, ["--workers", str(args.workers)])
        dask = suite_run(suite, Path(folder) / "dask.csv", args, ["--scheduler", f"local:{args.workers}"])
        for name, result in (("process pool", pool), ("Dask local cluster", dask)):
            print(f"| {name} | {result['wall']:.1f} | {result['rate']:.3f} | {result['busy']:.1f} | "
                  f"{result['outside']:.2f} | {result['verdicts']} |")
        print(f"\nthroughput Dask / pool: x{dask['rate'] / pool['rate']:.2f}")
        for key, verdict in pool["by_instance"].items():
            if dask["by_instance"].get(key) != verdict:
                print(f"- {Path(key[0]).stem} {Path(key[1]).stem}: pool {verdict}, Dask {dask['by_instance'].get(key)}")
        print()


def sample_suite(folder: Path, count: int) -> Path:
    """Every k-th instance of the ACAS Xu suite (absolute paths), as an instances.csv in `folder`."""
    with open(ACAS / "instances.csv") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // count)
    path = folder / "instances.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["onnx", "vnnlib", "timeout_s"])
        for row in rows[::step][:count]:
            writer.writerow([ACAS / row["onnx"], ACAS / row["vnnlib"], row["timeout_s"]])
    return path


def suite_run(suite: Path, out: Path, args, executor: list[str]) -> dict:
    """`verikit run` with the executor's options: wall time, throughput and where the time went."""
    command = [sys.executable, "-m", "verikit.cli", "run", str(suite), "--out", str(out), "--timeout-cap",
               str(args.cap), *executor]
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    busy = sum(float(row["seconds"]) for row in rows)
    counts = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return {"wall": wall, "rate": len(rows) / wall, "busy": busy,
            "outside": (args.workers * wall - busy) / len(rows),
            "verdicts": ", ".join(f"{count} {verdict}" for verdict, count in sorted(counts.items())),
            "by_instance": {(row["onnx"], row["vnnlib"]): row["verdict"] for row in rows}}


def overhead(tasks: int, workers: int) -> None:
    """Milliseconds a no-op task costs end to end once the processes have started: a process pool,
    plain Dask (submit, as_completed), and verikit's executor (start announcements and watchdog)."""
    from distributed import Client, as_completed

    from verikit.scale.cluster import start_local_cluster
    from verikit.scale.executor import Job, run_jobs

    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(operator.add, range(workers), range(workers)))  # started
        start = time.perf_counter()
        for future in [pool.submit(operator.add, i, i) for i in range(tasks)]:
            future.result()
        seconds = {"process pool": time.perf_counter() - start}
    cluster = start_local_cluster(workers)
    with Client(cluster) as client:
        list(run_jobs(client, [Job(operator.add, (i, i)) for i in range(workers)]))  # started
        start = time.perf_counter()
        for future in as_completed([client.submit(operator.add, i, i, pure=False) for i in range(tasks)]):
            future.result()
        seconds["Dask submit + as_completed"] = time.perf_counter() - start
        start = time.perf_counter()
        outcomes = list(run_jobs(client, [Job(operator.add, (i, i), seconds=60.0) for i in range(tasks)]))
        seconds["verikit.scale.executor"] = time.perf_counter() - start
    cluster.close()
    assert sorted(o.value for o in outcomes) == [2 * i for i in range(tasks)]
    print(f"{tasks} no-op tasks on {workers} processes\n")
    print("| executor | ms a task | vs process pool |")
    print("|---|---:|---:|")
    for name, total in seconds.items():
        print(f"| {name} | {1000 * total / tasks:.2f} | x{total / seconds['process pool']:.1f} |")
    print()


def hard_instance(which: str, timeout: float, workers: int) -> None:
    """`verikit verify` of one instance, local worker processes against a local Dask cluster."""
    net, prop = which.split(":")
    model, spec = ACAS / f"ACASXU_run2a_{net}_batch_2000.onnx", ACAS / f"{prop}.vnnlib"
    print(f"ACAS Xu {net} {prop}, verify --timeout {timeout:g}, wall time from the command's start\n")
    print("| executor | verdict | wall s | vs --workers |")
    print("|---|---|---:|---:|")
    first = None
    for name, extra in ((f"--workers {workers}", ["--workers", str(workers)]),
                        (f"--scheduler local:{workers}", ["--scheduler", f"local:{workers}"])):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "verikit.cli", "verify", str(model), str(spec), "-q",
                                 "--timeout", str(timeout), *extra], capture_output=True, text=True)
        wall = time.perf_counter() - start
        first = first or wall
        print(f"| {name} | {result.stdout.strip() or result.stderr.strip()[-60:]} | {wall:.1f} | "
              f"x{first / wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
