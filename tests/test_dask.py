"""Scaling out on Dask distributed, on local clusters of 2 worker processes (loopback only, no dashboard):
--scheduler values and the message without Dask; `verikit run` giving the sequential verdicts, losing
nothing when a worker is killed mid-run, holding deadlines on the workers and resuming after an
interrupt to the uninterrupted results; the executor's watchdog and retries; branch and bound's pieces
on the cluster, under the instance's deadline and stopped by a counterexample."""
from __future__ import annotations

import functools
import operator
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import BENCHMARKS
from verikit.cli import main
from verikit.errors import VerikitError
from verikit.suite import Instance, SuiteOptions, read_instances, read_results, run_suite

distributed = pytest.importorskip("distributed")

TEST, ACAS = BENCHMARKS / "test", BENCHMARKS / "acasxu"
HARD = [("3_3", "prop_2"), ("4_2", "prop_2"), ("1_1", "prop_6")]  # none decided in 3 s
CAP = 3.0


WORKER_WAIT = 240  # seconds for a (re)started worker to join: generous, a loaded machine starts torch slowly


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def client(benchmarks):
    """A local cluster's client; each test that restarts workers comes last, so the others find the
    workers warm (torch and verikit imported)."""
    from verikit.scale.cluster import start_local_cluster

    cluster = start_local_cluster(2)
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def pids(client) -> dict[str, int]:
    """Worker address -> process id, once both workers are up."""
    client.wait_for_workers(2, timeout=WORKER_WAIT)
    return client.run(os.getpid)


def warm(client) -> None:
    """Wait for both workers, and for their imports of torch and verikit (a fresh worker's first task
    would otherwise spend seconds on them)."""
    from verikit.scale.cluster import import_engines

    client.wait_for_workers(2, timeout=WORKER_WAIT)
    client.run(import_engines)


@pytest.fixture(scope="module")
def sequential(benchmarks, tmp_path_factory) -> dict[tuple[str, str], str]:
    """(onnx, vnnlib) -> verdict of the test suite run here, one instance after the other."""
    out = tmp_path_factory.mktemp("sequential") / "results.csv"
    run_suite(read_instances(TEST / "instances.csv"), out, SuiteOptions(timeout_cap=20))
    return verdicts(out)


def verdicts(out: Path) -> dict[tuple[str, str], str]:
    rows = read_results(out)
    assert len({(row["onnx"], row["vnnlib"]) for row in rows}) == len(rows)  # no instance twice
    return {(row["onnx"], row["vnnlib"]): row["verdict"] for row in rows}


def test_scheduler_values_are_checked():
    from verikit.scale.cluster import check_scheduler

    assert check_scheduler("local:3").workers == 3
    assert check_scheduler("local").workers >= 1
    assert check_scheduler("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert check_scheduler("10.0.0.5:8786").address == "10.0.0.5:8786"
    for wrong in ("local:0", "local:two", "cluster"):
        with pytest.raises(VerikitError, match="--scheduler") as error:
            check_scheduler(wrong)
        assert "local:N" in str(error.value)


def test_without_dask_one_message_names_the_extra(monkeypatch, tmp_path):
    from verikit.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails as if absent
    for command in (["run", TEST / "instances.csv", "--out", tmp_path / "out.csv"],
                    ["verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib"]):
        result = CliRunner().invoke(main, [str(a) for a in command] + ["--scheduler", "local:2"])
        assert result.exit_code == 2, result.output
        assert "verikit[dask]" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.csv").exists()


def test_workers_and_scheduler_together_are_one_clear_error(tmp_path):
    run = invoke("run", TEST / "instances.csv", "--out", tmp_path / "o.csv", "--workers", 2, "--scheduler", "local:2")
    assert run.exit_code == 2 and "--workers" in run.output and "Traceback" not in run.output
    run = invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "--scheduler", "tcp//nowhere")
    assert run.exit_code == 2 and "--scheduler" in run.output and "Traceback" not in run.output


def test_run_on_a_local_cluster_gives_the_sequential_verdicts(sequential, tmp_path):
    out, results = tmp_path / "results.csv", tmp_path / "results"
    run = invoke("run", TEST / "instances.csv", "--out", out, "--results-dir", results, "--scheduler", "local:2",
                 "--timeout-cap", 20)
    assert run.exit_code == 0, run.output
    assert verdicts(out) == sequential and set(sequential.values()) == {"sat", "unsat"}
    for (onnx, vnnlib), verdict in sequential.items():  # result files written here, by the client
        assert (results / f"{Path(onnx).stem}__{Path(vnnlib).stem}.txt").read_text().split("\n")[0] == verdict


def test_a_failing_job_is_an_error_outcome_and_the_rest_finish(client):
    from verikit.scale.executor import Job, run_jobs

    outcomes = list(run_jobs(client, [Job(int, ("not a number",)), Job(operator.add, (2, 3))]))
    assert len(outcomes) == 2
    by_function = {outcome.job.function: outcome for outcome in outcomes}
    assert by_function[operator.add].value == 5 and not by_function[operator.add].failure
    failed = by_function[int]
    assert failed.failure == "error" and failed.reason.startswith("ValueError: invalid literal")


def spin_until_stopped() -> object:
    """A piece that never finishes on its own: it stops only at a deadline check (the stop event)."""
    from verikit import deadline
    from verikit.verdict import Verdict

    try:
        while True:
            deadline.check()
            time.sleep(0.02)
    except deadline.DeadlineReached:
        return Verdict("timeout")


def found_after(seconds: float) -> object:
    from verikit.verdict import Verdict

    time.sleep(seconds)
    return Verdict("sat", method="bab")


def test_a_counterexample_stops_every_piece_on_the_cluster(client):
    import cloudpickle

    from verikit import deadline
    from verikit.methods.bab_pool import decide_jobs, on_cluster, start_pool

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    warm(client)
    jobs = [functools.partial(spin_until_stopped), functools.partial(found_after, 2.0),
            functools.partial(spin_until_stopped)]
    started = time.monotonic()
    with deadline.until(started + 120), on_cluster(lambda: client), start_pool(2) as pool:
        verdict = decide_jobs(pool, jobs, 2)
    assert verdict.status == "sat"
    busy = None
    for _ in range(100):  # the spinning pieces end at their next check once the stop event is set
        busy = sum(client.run(lambda dask_worker: len(dask_worker.active_threads)).values())
        if busy == 0:
            break
        time.sleep(0.2)
    assert busy == 0 and time.monotonic() - started < 60


def spin_to(end: float) -> float:
    """A piece given the instance's deadline: it runs until a deadline check stops it, and says how far
    past `end` (as it arrived on the worker) that was."""
    spin_until_stopped()
    return time.monotonic() - end


def test_the_deadline_travels_as_seconds_left(client):
    """A piece sent with 3 s left stops at that deadline on the worker: the argument arrives converted
    to the worker's clock, and the worker's deadline checks hold it."""
    import cloudpickle

    from verikit import deadline
    from verikit.methods.bab_pool import on_cluster, run_job, start_pool

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    warm(client)
    end = time.monotonic() + 3.0
    with deadline.until(end), on_cluster(lambda: client), start_pool(2) as pool:
        past = pool.apply_async(run_job, (functools.partial(spin_to, end),)).get()
    assert 0 <= past < 0.5 and end - 0.1 <= time.monotonic() < end + 10


def test_an_interrupted_run_resumes_to_the_uninterrupted_results(client, sequential, tmp_path):
    out = tmp_path / "results.csv"
    options = SuiteOptions(timeout_cap=20, scheduler=client.scheduler.address)

    def interrupt(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(read_instances(TEST / "instances.csv"), out, options, on_result=interrupt)
    assert len(read_results(out)) == 1  # a valid CSV with the one row written
    run_suite(read_instances(TEST / "instances.csv"), out, options)
    assert verdicts(out) == sequential


def test_compare_on_the_cluster_gives_what_one_process_gives(client, tmp_path):
    from verikit.compare import Settings, compare, parse_methods

    methods, settings = parse_methods("ibp,crown"), Settings(mode="bounds")
    here = compare(TEST / "instances.csv", tmp_path / "here", methods, settings, plots=False)
    there = compare(TEST / "instances.csv", tmp_path / "there", methods, settings, plots=False,
                    scheduler=client.scheduler.address)
    lowers = lambda records: {r.key() + (r.row,): r.lower for r in records}  # noqa: E731
    assert len(here.records) > 10 and not any(r.error for r in there.records)
    assert lowers(there.records) == pytest.approx(lowers(here.records), abs=1e-6)


def test_verify_splits_inputs_on_the_cluster_within_its_deadline(client):
    warm(client)
    executed = lambda: sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())  # noqa: E731
    before, started = executed(), time.monotonic()
    run = invoke("verify", ACAS / "ACASXU_run2a_3_3_batch_2000.onnx", ACAS / "prop_2.vnnlib", "--timeout", 10,
                 "--scheduler", client.scheduler.address, "-q")
    assert run.exit_code == 0 and run.output.strip() == "timeout", run.output
    assert time.monotonic() - started < 10 + 6
    assert executed() > before  # branch and bound's pieces ran on the workers


def test_a_killed_worker_loses_nothing_and_deadlines_hold(client, tmp_path):
    instances = [Instance(str(ACAS / f"ACASXU_run2a_{net}_batch_2000.onnx"), str(ACAS / f"{prop}.vnnlib"), 116.0)
                 for net, prop in HARD]
    warm(client)
    killed = []

    def kill_a_busy_worker(record: dict) -> None:
        if killed:
            return
        busy = [worker for worker, keys in client.processing().items() if keys]
        killed.append(client.run(os.getpid, workers=busy[:1])[busy[0]])
        os.kill(killed[0], signal.SIGKILL)

    out = tmp_path / "results.csv"
    options = SuiteOptions(timeout_cap=CAP, scheduler=client.scheduler.address, grace=20.0)
    run_suite(instances, out, options, on_result=kill_a_busy_worker)
    rows = read_results(out)
    assert killed and sorted((r["onnx"], r["vnnlib"]) for r in rows) == sorted((i.onnx, i.vnnlib) for i in instances)
    assert all(row["verdict"] in ("timeout", "unsat", "sat") for row in rows), [r["detail"] for r in rows]
    assert all(float(row["seconds"]) < CAP + 4 for row in rows), rows  # verify's own deadline, on the workers
    assert killed[0] not in client.run(os.getpid).values()


def test_watchdog_stops_a_job_past_its_deadline_and_restarts_its_worker(client):
    from verikit.scale.executor import ExecutorOptions, Job, run_jobs

    before = pids(client)
    started = time.monotonic()
    [outcome] = run_jobs(client, [Job(time.sleep, (600,), seconds=1.0)], ExecutorOptions(grace=2.0))
    assert outcome.failure == "timeout" and "grace" in outcome.reason
    assert 3.0 <= outcome.seconds < 30 and time.monotonic() - started < 90
    after = pids(client)
    assert len(set(before.values()) & set(after.values())) == 1  # the sleeping worker's process was replaced
    [again] = run_jobs(client, [Job(operator.mul, (6, 7), seconds=30.0)])
    assert again.value == 42


def test_a_job_that_kills_its_worker_is_retried_once_then_an_error(client):
    from verikit.scale.executor import Job, run_jobs

    [outcome] = run_jobs(client, [Job(os._exit, (3,))])
    assert outcome.failure == "error" and "died, 2 times" in outcome.reason
    assert len(pids(client)) == 2  # both workers came back


