"""`verikit.compare` on tiny random nets: records, method order, determinism, resume, workers, plots."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from netgen import mlp
from verikit.compare import COLUMNS, Settings, compare, parse_methods, read_records
from verikit.errors import VerikitError

BOUND_METHODS = "ibp,fast-lin,crown,alpha-crown"


def write_spec(path: Path, inputs: int, outputs: int, width: float) -> Path:
    """A VNN-LIB spec: the box [-width, width]^inputs, unsafe where another output reaches Y_0."""
    lines = [f"(declare-const X_{i} Real)" for i in range(inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(outputs)]
    for i in range(inputs):
        lines += [f"(assert (>= X_{i} {-width}))", f"(assert (<= X_{i} {width}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_0))" for j in range(1, outputs)) + "))")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def spec_folder(tmp_path_factory) -> Path:
    """One 4-16-16-3 ReLU net with three specs of growing width."""
    folder = tmp_path_factory.mktemp("set")
    mlp(folder / "net.onnx", widths=(16, 16), inputs=4, outputs=3, seed=3)
    for k, width in enumerate((0.05, 0.1, 0.2)):
        write_spec(folder / f"prop_{k}.vnnlib", 4, 3, width)
    return folder


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A YAML experiment: two ReLU nets x three inputs x two norms."""
    folder = tmp_path_factory.mktemp("experiment")
    for seed in (1, 2):
        mlp(folder / f"net{seed}.onnx", widths=(12, 12), inputs=4, outputs=3, seed=seed)
    np.save(folder / "x.npy", np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32))
    (folder / "run.yaml").write_text("mode: radius\nmodels: [net1.onnx, net2.onnx]\ninputs: [x.npy]\n"
                                     "norms: [inf, 2]\nepsilons: [0.05]\nmethods: [fast-lin, crown]\n"
                                     "steps: 8\nattack: false\n")
    return folder / "run.yaml"


@pytest.fixture(scope="module")
def bounds_run(spec_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("bounds") / "out"
    return out, compare(spec_folder, out, parse_methods(BOUND_METHODS), Settings(mode="bounds"))


def lowers(records) -> dict[tuple, float]:
    return {r.key() + (r.row,): r.lower for r in records}


def test_records_have_the_documented_columns(bounds_run):
    out, outcome = bounds_run
    with open(out / "records.csv", newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == COLUMNS
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == len(outcome.records) == 4 * 3 * 2  # methods x specs x rows
    first = json.loads(lines[0])
    assert tuple(first) == COLUMNS
    assert first["verikit_version"] and first["machine"] and first["seconds"] > 0 and first["peak_rss_mib"] > 0
    assert "ibp" in json.loads(first["options"])
    assert "bounds" in (out / "summary.md").read_text()
    # files are named relative to the set's folder, so records read the same on another machine
    assert {(r.model, r.spec) for r in outcome.records} == {("net.onnx", f"prop_{k}.vnnlib") for k in range(3)}


def test_alpha_crown_bounds_are_at_least_crowns(bounds_run):
    _, outcome = bounds_run
    by_method = defaultdict(dict)
    for record in outcome.records:
        by_method[record.method][(record.spec, record.row)] = record.lower
    for row, crown in by_method["crown"].items():
        assert by_method["alpha-crown"][row] >= crown - 1e-5


def test_the_same_run_twice_gives_the_same_bounds(bounds_run, spec_folder, tmp_path):
    _, first = bounds_run
    again = compare(spec_folder, tmp_path / "again", parse_methods(BOUND_METHODS), Settings(mode="bounds"),
                    plots=False)
    assert lowers(again.records) == pytest.approx(lowers(first.records), abs=1e-6)


def test_a_resumed_run_equals_an_uninterrupted_one(bounds_run, spec_folder, tmp_path):
    _, whole = bounds_run
    methods, settings = parse_methods(BOUND_METHODS), Settings(mode="bounds")
    partial = compare(spec_folder, tmp_path / "resumed", methods, settings, limit=5, plots=False)
    assert len({r.key() for r in partial.records}) == 5
    resumed = compare(spec_folder, tmp_path / "resumed", methods, settings, plots=False)
    assert lowers(resumed.records) == pytest.approx(lowers(whole.records), abs=1e-6)
    assert len(read_records(tmp_path / "resumed")) == len(whole.records)  # nothing measured twice


def test_two_workers_give_what_one_gives(bounds_run, spec_folder, tmp_path):
    _, serial = bounds_run
    parallel = compare(spec_folder, tmp_path / "parallel", parse_methods(BOUND_METHODS), Settings(mode="bounds"),
                       workers=2, plots=False)
    assert lowers(parallel.records) == pytest.approx(lowers(serial.records), abs=1e-6)


def test_crown_certifies_a_larger_radius_than_fast_lin(experiment, tmp_path):
    outcome = compare(experiment, tmp_path / "radius", mode_given=False)
    radii = defaultdict(list)
    for record in outcome.records:
        assert record.mode == "radius" and not record.error
        assert record.model in ("net1.onnx", "net2.onnx") and record.spec.startswith("x.npy#")
        radii[record.method].append(record.certified)
    assert len(radii["crown"]) == 2 * 3 * 2  # models x inputs x norms
    assert np.mean(radii["crown"]) >= np.mean(radii["fast-lin"])
    assert np.mean(radii["crown"]) > 0
    for name in outcome.plots:
        for suffix in ("png", "svg"):
            assert (tmp_path / "radius" / "plots" / f"{name}.{suffix}").stat().st_size > 0
    assert set(outcome.plots) == {"time_per_method", "radius_per_method", "radius_vs_time"}


def test_bounds_plots_are_written_and_reproducible(bounds_run, tmp_path):
    out, outcome = bounds_run
    assert set(outcome.plots) == {"time_per_method", "tightness_per_method", "tightness_vs_time"}
    for name in outcome.plots:
        assert (out / "plots" / f"{name}.png").stat().st_size > 0
        svg = (out / "plots" / f"{name}.svg").read_text()
        assert "<dc:date>" not in svg


def test_verdicts_with_imported_results_draw_a_cactus_plot(spec_folder, tmp_path):
    peers = tmp_path / "peer.csv"
    peers.write_text("benchmark,onnx,vnnlib,result,seconds\nx,net.onnx,prop_0.vnnlib,unsat,1.5\n"
                     "x,net.onnx,prop_1.vnnlib,sat,0.5\nx,other.onnx,prop_9.vnnlib,sat,0.5\n")
    outcome = compare(spec_folder, tmp_path / "verdicts", parse_methods("ibp,ibp+crown"),
                      Settings(mode="verdicts", timeout=5), imports=[("peer", peers)])
    assert {r.verdict for r in outcome.records} <= {"sat", "unsat", "unknown", "timeout"}
    assert len(outcome.peers) == 2  # only the set's instances
    assert (tmp_path / "verdicts" / "plots" / "cactus.png").stat().st_size > 0
    summary = (tmp_path / "verdicts" / "summary.md").read_text()
    assert "peer (imported)" in summary and "measured elsewhere" in summary


def test_an_output_folder_of_other_files_is_refused(spec_folder, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(VerikitError, match="holds other files"):
        compare(spec_folder, tmp_path, parse_methods("ibp"), Settings(mode="bounds"), plots=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_missing_matplotlib_names_the_extra(spec_folder, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(VerikitError, match=r"verikit\[plots\]"):
        compare(spec_folder, tmp_path / "out", parse_methods("ibp"), Settings(mode="bounds"))


def test_a_model_entry_may_bring_its_own_inputs(tmp_path):
    """Models of two input sizes in one experiment: each is measured on its own inputs only."""
    mlp(tmp_path / "net4.onnx", widths=(8,), inputs=4, outputs=3, seed=1)
    mlp(tmp_path / "net5.onnx", widths=(8,), inputs=5, outputs=3, seed=2)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x4.npy", rng.uniform(-1, 1, (2, 4)).astype(np.float32))
    np.save(tmp_path / "x5.npy", rng.uniform(-1, 1, (1, 5)).astype(np.float32))
    (tmp_path / "run.yaml").write_text("mode: bounds\nmodels: [net4.onnx, {file: net5.onnx, inputs: [x5.npy]}]\n"
                                       "inputs: [x4.npy]\nepsilons: [0.05]\nmethods: [ibp]\n")
    outcome = compare(tmp_path / "run.yaml", tmp_path / "out", mode_given=False, plots=False)
    assert not any(record.error for record in outcome.records)
    assert {(r.model, r.spec) for r in outcome.records} == {
        ("net4.onnx", "x4.npy#0"), ("net4.onnx", "x4.npy#1"), ("net5.onnx", "x5.npy#0")}
    (tmp_path / "bad.yaml").write_text("mode: bounds\nmodels: [net4.onnx]\nepsilons: [0.05]\nmethods: [ibp]\n")
    with pytest.raises(VerikitError, match="no inputs for net4.onnx"):
        compare(tmp_path / "bad.yaml", tmp_path / "out2", mode_given=False, plots=False)


def test_verdicts_run_a_method_with_its_options(spec_folder, tmp_path, monkeypatch):
    import verikit.api as api

    seen, original = [], api.verify
    monkeypatch.setattr(api, "verify",
                        lambda *args, **kw: (seen.append(kw["method_options"]), original(*args, **kw))[1])
    outcome = compare(spec_folder, tmp_path / "v", parse_methods("alpha-crown:steps=3"),
                      Settings(mode="verdicts", timeout=20), plots=False)
    assert len(outcome.records) == 3 and all(r.verdict in ("sat", "unsat") for r in outcome.records)
    assert len(seen) == 3 and all(chosen["alpha-crown"].steps == 3 for chosen in seen)
    assert json.loads(outcome.records[0].options)["alpha-crown"]["steps"] == 3
    with pytest.raises(VerikitError, match="options belong to one method"):
        compare(spec_folder, tmp_path / "w", parse_methods("ibp+crown:dtype=float64"), Settings(mode="verdicts"))


def test_verify_checks_the_type_of_method_options(spec_folder):
    import verikit

    graph = verikit.load_model(spec_folder / "net.onnx")
    prop = verikit.load_spec(spec_folder / "prop_0.vnnlib", graph)
    with pytest.raises(VerikitError, match="is a dict; alpha-crown takes AlphaCrownOptions"):
        verikit.verify(graph, prop, timeout=5, method_options={"alpha-crown": {"steps": 3}})
