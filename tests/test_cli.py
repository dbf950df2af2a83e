"""The command line: verdicts, result files, and one clear message (exit 2, no traceback) on bad input."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
import sys

import pytest
from click.testing import CliRunner

from conftest import BENCHMARKS
from verikit.cli import main

TEST = BENCHMARKS / "test"
ACAS = BENCHMARKS / "acasxu"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_verify_writes_result_file(tmp_path, benchmarks):
    out = tmp_path / "result.txt"
    result = invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "--timeout", 20,
                    "--results", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "unsat"
    assert out.read_text() == "unsat\n"


def test_verify_sat_prints_counterexample(benchmarks):
    result = invoke("verify", TEST / "test_sat.onnx", TEST / "test_prop.vnnlib", "--timeout", 20)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "sat"
    assert "(X_0 " in result.output and "(Y_4 " in result.output


def test_corrupt_model_is_one_clear_error(tmp_path, benchmarks):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((TEST / "test_small.onnx").read_bytes()[:100])
    result = invoke("verify", broken, TEST / "test_small.vnnlib")
    assert result.exit_code == 2
    assert "error:" in result.output and str(broken) in result.output and "fix:" in result.output
    assert "Traceback" not in result.output


def test_spec_shape_mismatch(benchmarks):
    result = invoke("verify", TEST / "test_tiny.onnx", TEST / "test_prop.vnnlib")
    assert result.exit_code == 2
    assert "test_prop.vnnlib" in result.output and "Traceback" not in result.output


def test_malformed_vnnlib_names_line_and_column(tmp_path, benchmarks):
    spec = tmp_path / "bad.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)\n")
    out = tmp_path / "result.txt"
    result = invoke("verify", TEST / "test_tiny.onnx", spec, "--results", out)
    assert result.exit_code == 2
    assert str(spec) in result.output and "line" in result.output
    assert out.read_text().startswith("error")


def test_bad_yaml(tmp_path, benchmarks):
    spec = tmp_path / "bad.yaml"
    spec.write_text("epsilon: [0.1\nnorm: inf\n")
    result = invoke("verify", TEST / "test_tiny.onnx", spec)
    assert result.exit_code == 2 and str(spec) in result.output and "Traceback" not in result.output


def test_unknown_method_lists_choices(benchmarks):
    result = invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "--method", "magic")
    assert result.exit_code == 2 and "magic" in result.output and "ibp" in result.output


def test_bound_json(benchmarks):
    import json

    result = invoke("bound", TEST / "test_small.onnx", TEST / "test_small.vnnlib", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert len(rows) == 1 and rows[0]["lower"] > 0  # IBP refutes test_small's single row


def test_real_entry_point_debug_shows_traceback(tmp_path, benchmarks):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"nonsense")
    plain = subprocess.run([sys.executable, "-m", "verikit.cli", "verify", str(broken), str(TEST / "test_tiny.vnnlib")],
                           capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and str(broken) in plain.stderr
    debug = subprocess.run([sys.executable, "-m", "verikit.cli", "verify", str(broken),
                            str(TEST / "test_tiny.vnnlib"), "--debug"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.parametrize("command", ["verify", "bound", "plugins", "run", "radius"])
def test_help_teaches_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example" in result.output


def test_radius_certifies_below_the_attack(tmp_path):
    import numpy as np
    import torch

    from netgen import cnn
    from verikit.api import load_model

    model = cnn(tmp_path / "cnn.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (1, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    label = int(load_model(model).forward_flat(torch.from_numpy(x).reshape(1, -1)).argmax())
    result = invoke("radius", model, "--input", tmp_path / "x.npy", "--label", label, "--method", "crown",
                    "--domain", 0, 1)
    assert result.exit_code == 0, result.output
    certified = float(result.output.strip().splitlines()[-1])
    attack = float(next(line for line in result.output.splitlines() if "attack radius" in line).split()[-2])
    assert 0 < certified <= attack
    wrong = invoke("radius", model, "--input", tmp_path / "x.npy", "--label", 9)
    assert wrong.exit_code == 2 and "not a class" in wrong.output


def test_run_suite_is_resumable(tmp_path, benchmarks):
    import csv

    suite = tmp_path / "suite.csv"
    suite.write_text("onnx,vnnlib,timeout_s,expected\n"
                     f"{TEST / 'test_tiny.onnx'},{TEST / 'test_tiny.vnnlib'},20,unsat\n"
                     f"{TEST / 'test_sat.onnx'},{TEST / 'test_prop.vnnlib'},20,sat\n")
    out = tmp_path / "results.csv"
    first = invoke("run", suite, "--out", out, "--results-dir", tmp_path / "results")
    assert first.exit_code == 0, first.output
    rows = list(csv.DictReader(open(out)))
    assert [r["verdict"] for r in rows] == ["unsat", "sat"] and all(r["agreement"] == "yes" for r in rows)
    assert (tmp_path / "results" / "test_sat__test_prop.txt").read_text().startswith("sat\n")
    again = invoke("run", suite, "--out", out)
    assert again.exit_code == 0 and len(list(csv.DictReader(open(out)))) == 2  # nothing re-run


def test_vnncomp_scripts(tmp_path, benchmarks):
    """The VNN-COMP tool interface: prepare, then run with a result file; a hard instance past its limit
    gives `timeout`, never a missing file."""
    scripts = Path(__file__).resolve().parents[1] / "vnncomp"
    env = {**os.environ, "PYTHON": sys.executable}
    prepared = subprocess.run(["bash", scripts / "prepare_instance.sh", "v1", "test", TEST / "test_tiny.onnx",
                               TEST / "test_tiny.vnnlib"], capture_output=True, text=True, env=env)
    assert prepared.returncode == 0, prepared.stderr
    result = tmp_path / "tiny.txt"
    subprocess.run(["bash", scripts / "run_instance.sh", "v1", "test", TEST / "test_tiny.onnx",
                    TEST / "test_tiny.vnnlib", result, "30"], capture_output=True, text=True, env=env)
    assert result.read_text() == "unsat\n"
    hard = tmp_path / "hard.txt"
    subprocess.run(["bash", scripts / "run_instance.sh", "v1", "acasxu", ACAS / "ACASXU_run2a_3_3_batch_2000.onnx",
                    ACAS / "prop_2.vnnlib", hard, "3"], capture_output=True, text=True, env=env)
    assert hard.read_text() == "timeout\n"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_without_a_gpu_is_one_clear_error(benchmarks):
    for command in (["verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib"], ["run", TEST / "instances.csv"]):
        result = invoke(*command, "--device", "cuda")
        assert result.exit_code == 2
        assert "--device" in result.output and "use --device cpu" in result.output
        assert "Traceback" not in result.output


def test_verify_on_the_cpu_device_explicitly(benchmarks):
    result = invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "--device", "cpu", "-q")
    assert result.exit_code == 0 and result.output.strip() == "unsat"


def test_verify_workers_option(benchmarks, monkeypatch):
    result = invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "--workers", "-1")
    assert result.exit_code == 2 and "--workers" in result.output and "Traceback" not in result.output
    result = invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "--workers", "2", "-q")
    assert result.exit_code == 0 and result.output.strip() == "unsat"
    # by default (0) one worker a usable core, as a VNN-COMP run of one instance has the whole machine
    import verikit.methods.bab_pool as bab_pool
    import verikit.pipeline as pipeline

    assert 1 <= bab_pool.usable_cores() <= (os.cpu_count() or 1)
    seen, original = [], pipeline.verify
    monkeypatch.setattr(pipeline, "verify", lambda graph, prop, options, **kw: (
        seen.append(options.workers), original(graph, prop, options, **kw))[1])
    monkeypatch.setattr(bab_pool, "usable_cores", lambda: 3)
    assert invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "-q").exit_code == 0
    assert invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "-q", "--workers", "1").exit_code == 0
    monkeypatch.setattr(bab_pool, "usable_cores", lambda: 64)  # each worker holds a torch: at most 16
    assert invoke("verify", TEST / "test_tiny.onnx", TEST / "test_tiny.vnnlib", "-q").exit_code == 0
    assert seen == [3, 1, bab_pool.AUTO_WORKERS_MAX] and bab_pool.default_workers("cuda") == 1


def test_bound_layers_reports_every_relaxed_value(benchmarks):
    import json

    result = invoke("bound", TEST / "test_small.onnx", TEST / "test_small.vnnlib", "-m", "crown", "--layers", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["layers"] and found["layers"][0], found
    for layer in found["layers"][0]:
        assert len(layer["lower"]) == layer["neurons"] == len(layer["upper"])
        assert all(low <= high for low, high in zip(layer["lower"], layer["upper"]))
        assert 0 <= layer["loose"] <= layer["neurons"]
