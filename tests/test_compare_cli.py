"""`verikit compare` from the command line, and other tools' results files."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from netgen import mlp
from test_compare import write_spec
from verikit.cli import main
from verikit.compare.peers import read_peer_results
from verikit.errors import SpecError

PEERS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "peers"


@pytest.fixture
def folder(tmp_path) -> Path:
    mlp(tmp_path / "net.onnx", widths=(8,), inputs=3, outputs=2, seed=5)
    for k in range(2):
        write_spec(tmp_path / f"prop_{k}.vnnlib", 3, 2, 0.05 * (k + 1))
    return tmp_path


def test_the_command_compares_a_folder_end_to_end(folder, tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(main, ["compare", str(folder), "--methods", "ibp,crown", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "mean gap to" in result.output and "crown" in result.output
    assert (out / "records.csv").is_file() and (out / "summary.md").is_file()
    assert (out / "plots" / "time_per_method.svg").stat().st_size > 0
    again = CliRunner().invoke(main, ["compare", str(folder), "--methods", "ibp,crown", "--out", str(out)])
    assert again.exit_code == 0 and "4 of 4 already recorded" in again.output


def test_help_teaches_with_examples():
    result = CliRunner().invoke(main, ["compare", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output and "--import" in result.output


@pytest.mark.parametrize("arguments, message", [
    (["--methods", "nosuch"], "no method named 'nosuch'"),
    (["--methods", "ibp+crown"], "chain"),
    (["--methods", "crown:bogus=1"], "unknown option"),
    (["--methods", "ibp", "--import", "peer"], "TOOL=FILE"),
])
def test_bad_arguments_are_one_clear_error(folder, tmp_path, arguments, message):
    result = CliRunner().invoke(main, ["compare", str(folder), "--out", str(tmp_path / "o"), *arguments])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_malformed_results_row_names_its_line(folder, tmp_path):
    bad = tmp_path / "peer.csv"
    bad.write_text("onnx,vnnlib,result,seconds\nnet.onnx,prop_0.vnnlib,unsat,1.0\nnet.onnx,prop_1.vnnlib,unsat,fast\n")
    with pytest.raises(SpecError, match=r"line 3.*bad seconds 'fast'"):
        read_peer_results("peer", bad)
    result = CliRunner().invoke(main, ["compare", str(folder), "--methods", "ibp", "--out", str(tmp_path / "o"),
                                       "--import", f"peer={bad}"])
    assert result.exit_code == 2 and "line 3" in result.output and str(bad) in result.output
    assert not (tmp_path / "o").exists()  # refused before any measurement


def test_the_peers_results_and_instances_columns_are_read():
    if not PEERS.is_dir():
        pytest.skip("the peers' results are not beside the checkout")
    abcrown = read_peer_results("abcrown", PEERS / "abcrown_results.csv")
    assert len(abcrown) == 60 and sum(r.solved for r in abcrown) == 59
    timed = read_peer_results("nnenum", PEERS.parent / "acasxu" / "instances.csv")
    assert timed and all(r.solved == (r.seconds is not None) for r in timed)
