"""The command line under misuse and in scripts: output files never replace inputs, suites and results
CSVs are checked before work starts, methods are checked in their roles, arguments are range-checked,
SIGTERM stops every worker, and exit codes and JSON output are as README documents them."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import BENCHMARKS
from verikit.cli import main

TEST = BENCHMARKS / "test"
ACAS = BENCHMARKS / "acasxu"
TINY = (TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib")  # unsat, decided by ibp in a second
SAT = (TEST / "test_sat.onnx", TEST / "test_prop.vnnlib")  # sat, found by the attack
QUICK = ("--timeout", "10", "--workers", "1")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_clear_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)


# 1. --results never replaces an input, needs an existing directory, and is written like any file.

@pytest.fixture
def instance(tmp_path, benchmarks):
    """A copy of the tiny instance, with a symbolic link to the model and a hard link to the spec."""
    model, spec = tmp_path / "m.onnx", tmp_path / "p.vnnlib"
    model.write_bytes(TINY[0].read_bytes())
    spec.write_bytes(TINY[1].read_bytes())
    (tmp_path / "link.onnx").symlink_to(model)
    os.link(spec, tmp_path / "hard.vnnlib")
    return model, spec


@pytest.mark.parametrize("target", ["m.onnx", "p.vnnlib", "link.onnx", "hard.vnnlib"])
def test_results_never_overwrite_the_model_or_the_spec(instance, target):
    model, spec = instance
    before = model.read_bytes(), spec.read_bytes()
    result = invoke("verify", model, spec, "--results", model.parent / target, *QUICK)
    one_clear_error(result, "--results", "would overwrite the input")
    assert (model.read_bytes(), spec.read_bytes()) == before


def test_results_in_a_missing_directory_is_an_error(instance, tmp_path):
    result = invoke("verify", *instance, "--results", tmp_path / "nowhere" / "out.txt", *QUICK)
    one_clear_error(result, str(tmp_path / "nowhere"), "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_results_replace_an_existing_file_with_ordinary_permissions(instance, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("stale\n")
    mask = os.umask(0o027)
    try:
        result = invoke("verify", *instance, "--results", out, "-q", *QUICK)
    finally:
        os.umask(mask)
    assert result.exit_code == 0, result.output
    assert out.read_text() == "unsat\n" and out.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.txt")] == []  # no temporary left


# 2. run: the results CSV and the suite are checked before the first instance runs.

def write_suite(path: Path, rows: list[str], header: str = "onnx,vnnlib,timeout_s,expected") -> Path:
    path.write_text("\n".join(([header] if header else []) + rows) + "\n")
    return path


@pytest.fixture
def suite(tmp_path, benchmarks):
    return write_suite(tmp_path / "suite.csv", [f"{TINY[0]},{TINY[1]},10,unsat"])


@pytest.fixture
def no_instance_runs(monkeypatch):
    import verikit.suite

    def refuse(*args, **kwargs):
        raise AssertionError("an instance ran before the arguments were checked")

    monkeypatch.setattr(verikit.suite, "run_instance", refuse)


def test_run_out_is_not_the_suite(suite, no_instance_runs):
    before = suite.read_text()
    one_clear_error(invoke("run", suite, "--out", suite), "--out", "would overwrite the input")
    assert suite.read_text() == before


@pytest.mark.parametrize("content, words", [
    (b"name,score\nx,1\n", ["columns are name,score", "line 1"]),
    (b"\xff\xfe\x00\x81binary", ["not a UTF-8 CSV"]),
])
def test_run_out_must_be_a_results_csv(suite, tmp_path, no_instance_runs, content, words):
    out = tmp_path / "other.csv"
    out.write_bytes(content)
    one_clear_error(invoke("run", suite, "--out", out), str(out), *words)
    assert out.read_bytes() == content


def test_run_out_in_a_missing_directory(suite, tmp_path, no_instance_runs):
    one_clear_error(invoke("run", suite, "--out", tmp_path / "nowhere" / "r.csv"), "does not exist")


def test_suite_with_a_foreign_header_is_refused(tmp_path, benchmarks, no_instance_runs):
    suite = write_suite(tmp_path / "s.csv", [f"{TINY[0]},{TINY[1]}"], header="model,property")
    one_clear_error(invoke("run", suite, "--out", tmp_path / "r.csv"), "line 1", "header", "onnx,vnnlib")


def test_suite_expected_values_are_checked(tmp_path, benchmarks, no_instance_runs):
    suite = write_suite(tmp_path / "s.csv", ["", f"{TINY[0]},{TINY[1]},10,maybe"])  # a blank line 2
    one_clear_error(invoke("run", suite, "--out", tmp_path / "r.csv"), "line 3", "'maybe'", "sat, unsat")


def test_suite_reads_vnncomp_words_and_checks_timeouts(tmp_path, benchmarks):
    from verikit.errors import SpecError
    from verikit.suite import read_instances

    suite = write_suite(tmp_path / "s.csv", [f"{TINY[0]},{TINY[1]},10,{word}"
                                             for word in ("violated", "HOLDS", "disputed", "unknown", "")])
    assert [i.expected for i in read_instances(suite)] == ["sat", "unsat", "disputed", "unknown", ""]
    headerless = write_suite(tmp_path / "h.csv", [f"{TINY[0]},{TINY[1]},7"], header="")
    assert read_instances(headerless)[0].timeout == 7.0
    for timeout in ("0", "-1", "nan", "inf"):
        write_suite(suite, [f"{TINY[0]},{TINY[1]},{timeout},unsat"])
        with pytest.raises(SpecError, match="line 2"):
            read_instances(suite)


def test_run_errors_exit_4_and_are_retried_only_when_asked(tmp_path, benchmarks):
    spec = tmp_path / "late.vnnlib"
    suite = write_suite(tmp_path / "s.csv", [f"{TINY[0]},{TINY[1]},10,unsat", f"{TINY[0]},{spec},10,"])
    out, lines = tmp_path / "r.csv", tmp_path / "r.jsonl"
    first = invoke("run", suite, "--out", out, "--jsonl", lines)
    assert first.exit_code == 4 and "--retry-errors" in first.output, first.output
    assert [json.loads(line)["verdict"] for line in lines.read_text().splitlines()] == ["unsat", "error"]
    spec.write_bytes(TINY[1].read_bytes())
    assert invoke("run", suite, "--out", out).exit_code == 4  # resuming keeps the error
    again = invoke("run", suite, "--out", out, "--retry-errors", "--jsonl", "-")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip())["verdict"] == "unsat"  # only the retried instance ran
    assert [r["verdict"] for r in csv.DictReader(open(out))] == ["unsat", "unsat"]


def test_run_passes_its_seed_to_each_instance(suite, tmp_path, monkeypatch):
    import verikit.pipeline as pipeline

    seeds, original = [], pipeline.verify
    monkeypatch.setattr(pipeline, "verify", lambda graph, prop, options, **kw: (
        seeds.append(options.seed), original(graph, prop, options, **kw))[1])
    assert invoke("run", suite, "--out", tmp_path / "r.csv", "--seed", 7).exit_code == 0
    assert seeds == [7]


# 3. Every method is checked in its role before any work.

@pytest.mark.parametrize("args, option, fitting", [
    (["bound", *TINY, "-m", "pgd"], "--method", "ibp"),
    (["verify", *TINY, "-m", "bab"], "--method", "crown"),
    (["verify", *TINY, "--attack", "ibp"], "--attack", "pgd"),
    (["verify", *TINY, "--complete", "ibp"], "--complete", "milp"),
    (["verify", *TINY, "--complete", "nosuch"], "--complete", "bab"),  # ibp alone decides TINY
    (["run", TEST / "instances.csv", "--attack", "bab"], "--attack", "pgd"),
])
def test_methods_are_checked_in_their_role(benchmarks, args, option, fitting):
    one_clear_error(invoke(*args), option, fitting)


def test_api_checks_methods_and_timeout(benchmarks):
    import verikit
    from verikit.errors import PluginError, VerikitError

    model = verikit.load_model(TINY[0])
    spec = verikit.load_spec(TINY[1], model)
    with pytest.raises(PluginError, match="not a bound method"):
        verikit.bound(model, spec, method="pgd")
    with pytest.raises(PluginError, match="bab, milp"):
        verikit.verify(model, spec, timeout=5, complete="ibp")
    with pytest.raises(VerikitError, match="timeout"):
        verikit.verify(model, spec, timeout=float("nan"))


def test_method_help_lists_the_methods_of_its_role():
    text = invoke("verify", "--help").output
    assert "alpha-crown" in text and "Available: pgd" in text and "bab, milp" in text


# 4. Arguments are range-checked.

@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_timeouts_must_be_finite_and_positive(benchmarks, value):
    for args in (["verify", *TINY, "--timeout"], ["run", TEST / "instances.csv", "--timeout-cap"],
                 ["bound", *TINY, "--timeout"]):
        one_clear_error(invoke(*args, value), "--timeout")


@pytest.fixture
def cnn_input(tmp_path):
    from netgen import cnn

    model = cnn(tmp_path / "cnn.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 1, (1, 1, 8, 8)).astype(np.float32))
    return model, tmp_path / "x.npy"


@pytest.mark.parametrize("extra, words", [
    (["--steps", "0"], ["--steps"]),
    (["--domain", "1", "0"], ["--domain", "LOW < HIGH"]),
    (["--target", "1"], ["--target", "label itself"]),
    (["-m", "pgd"], ["not a bound method"]),
])
def test_radius_arguments(cnn_input, extra, words):
    model, x = cnn_input
    one_clear_error(invoke("radius", model, "--input", x, "--label", 1, *extra), *words)


@pytest.mark.parametrize("make, words", [
    (lambda path: np.save(path, np.full(64, np.nan, dtype=np.float32)), ["NaN"]),
    (lambda path: path.write_text("0.1 0.2 0.3\n"), ["numeric .npy array"]),
    (lambda path: np.save(path, np.array(["a", "b"])), ["numeric .npy array", "<U1"]),
])
def test_radius_input_must_be_a_finite_numeric_array(cnn_input, tmp_path, make, words):
    model, _ = cnn_input
    bad = tmp_path / "bad.npy"
    make(bad)
    result = invoke("radius", model, "--input", bad, "--label", 1)
    one_clear_error(result, str(bad), *words)
    assert "allow_pickle" not in result.output


def test_threads_are_checked_and_accepted_after_the_command(benchmarks, monkeypatch):
    monkeypatch.delenv("VERIKIT_THREADS", raising=False)
    assert invoke("--threads", 0, "plugins").exit_code == 2
    assert invoke("verify", *TINY, "--threads", 0).exit_code == 2
    try:
        result = invoke("--threads", 1, "verify", *TINY, "--threads", 2, "-q", *QUICK)
        assert result.exit_code == 0 and result.output.strip() == "unsat"
        assert os.environ["VERIKIT_THREADS"] == "2"
    finally:
        __import__("torch").set_num_threads(1)  # as conftest set it for the other tests


# 5. SIGTERM ends verikit as Ctrl-C does: exit 143, no worker left behind.

def children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if status and int(status.split("PPid:")[1].split()[0]) == pid:
            found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has ended)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            running.add(pid)
    return running


def workers(pids: set[int]) -> set[int]:
    """Those of `pids` still running that are workers (not multiprocessing's resource tracker)."""
    found = set()
    for pid in alive(pids):
        try:
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except OSError:
            continue
    return found


def terminate_once_workers_run(args: list[str], count: int) -> tuple[int, float, set[int], str]:
    """Start verikit, wait until it has `count` worker processes (at most 40 s), send SIGTERM; returns
    the exit status, the seconds it took to exit, the children it had, and its stderr."""
    process = subprocess.Popen([sys.executable, "-m", "verikit.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    seen, start = set(), time.monotonic()
    try:
        while time.monotonic() - start < 40 and process.poll() is None and len(workers(seen)) < count:
            time.sleep(0.2)
            seen |= children(process.pid)
        assert process.poll() is None, "verikit ended before its workers started"
        seen |= children(process.pid)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=20)
        return process.returncode, time.monotonic() - sent, seen, stderr
    finally:
        if process.poll() is None:
            process.kill()


def assert_ended_cleanly(code: int, seconds: float, seen: set[int], stderr: str) -> None:
    deadline = time.monotonic() + 5
    while alive(seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = alive(seen)
    for pid in leftover:  # this test's own orphans: do not leave them running
        os.kill(pid, signal.SIGKILL)
    assert code == 143, stderr
    assert seconds < 5, seconds
    assert not leftover, f"workers outlived verikit: {leftover}"
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr


def test_sigterm_stops_verify_and_its_bab_workers(benchmarks):
    # No attack: input splitting starts its two workers after its first slice (10 % of the timeout) and
    # 2 s alone, about 5 s in; the instance is far from decided by then.
    args = ["verify", ACAS / "ACASXU_run2a_3_3_batch_2000.onnx", ACAS / "prop_2.vnnlib", "--timeout", "20",
            "--workers", "2", "--attack", "none", "-q"]
    assert_ended_cleanly(*terminate_once_workers_run([str(a) for a in args], count=2))


def test_sigterm_stops_run_and_its_instance_workers(tmp_path, benchmarks):
    slow = f"{ACAS / 'ACASXU_run2a_3_3_batch_2000.onnx'},{ACAS / 'prop_2.vnnlib'},20,"
    suite = write_suite(tmp_path / "s.csv", [slow, slow.replace("3_3", "3_4")])
    args = ["run", suite, "--out", tmp_path / "r.csv", "--workers", "2"]
    assert_ended_cleanly(*terminate_once_workers_run([str(a) for a in args], count=2))


def test_interrupts_map_to_their_exit_codes(monkeypatch):
    from verikit.cli.common import Terminated, handles_errors

    for error, code in ((Terminated(), 143), (KeyboardInterrupt(), 130)):
        @handles_errors
        def command():
            raise error

        with pytest.raises(SystemExit) as exit_info:
            command()
        assert exit_info.value.code == code


# Scripting: exit codes, JSON, counterexamples, tables on stdout, help, start-up.

def test_verify_exit_code_json_and_counterexample(benchmarks, tmp_path):
    saved = tmp_path / "x.npy"
    result = invoke("verify", *SAT, "--json", "--exit-code", "--save-counterexample", saved, *QUICK)
    assert result.exit_code == 10, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "sat" and record["method"] and record["seconds"] >= 0
    assert [s["stage"] for s in record["stages"]][0] == "load model and spec"
    assert all(s["start"] >= 0 and s["seconds"] >= 0 for s in record["stages"])
    x = np.load(saved)
    assert x.dtype == np.float32 and list(x.shape) == record["counterexample"]["input_shape"]
    assert np.allclose(x.reshape(-1), record["counterexample"]["input"])
    assert invoke("verify", *TINY, "--exit-code", "-q", *QUICK).exit_code == 20
    assert invoke("verify", *TINY, "-q", *QUICK).exit_code == 0


def test_verify_verbose_prints_each_stage(benchmarks):
    result = invoke("verify", *TINY, "-v", *QUICK)
    assert result.exit_code == 0 and result.stdout.strip().splitlines()[-1] == "unsat"
    assert "load model and spec" in result.stderr and "bounds (ibp)" in result.stderr and " s  " in result.stderr


def test_bound_prints_to_stdout_names_rows_and_times_out(benchmarks):
    table = invoke("bound", TEST / "test_small.onnx", TEST / "test_small.vnnlib")
    assert table.exit_code == 0 and "-1.0*Y_0 <= -100.0" in table.stdout
    rows = json.loads(invoke("bound", *TINY, "--json", "-m", "crown").stdout)["rows"]
    assert all(set(r) >= {"condition", "lower", "upper"} and "Y_" in r["condition"] for r in rows)
    timeout = invoke("bound", *TINY, "-m", "crown", "--timeout", "1e-9")
    assert timeout.exit_code == 5 and "timeout" in timeout.stderr


def test_row_condition_reads_like_the_spec():
    from verikit.cli.bound_commands import row_condition

    assert row_condition([1.0, -1.0, 0.0], 0.3) == "1.0*Y_0 - 1.0*Y_1 <= 0.3"
    assert row_condition([0.0, -2.5], -1.0) == "-2.5*Y_1 <= -1.0"


def test_top_level_help_shows_whole_summaries():
    text = " ".join(invoke("--help").output.split())
    for command in main.commands.values():
        assert command.short_help.endswith(".") and command.short_help in text
    assert "..." not in text.split("Commands:")[1]


def test_cli_import_leaves_torch_alone():
    code = "import sys, verikit.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
