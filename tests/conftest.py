"""Shared test fixtures: the VNN-COMP benchmark folder beside the checkout, and small ONNX builders."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def benchmark_instances(suite: str) -> list[dict]:
    """Rows of a suite's instances.csv with absolute paths."""
    folder = BENCHMARKS / suite
    with open(folder / "instances.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["onnx"] = str(folder / row["onnx"])
        row["vnnlib"] = str(folder / row["vnnlib"])
    return rows


def benchmark_networks() -> list[Path]:
    return sorted(BENCHMARKS.rglob("*.onnx"))


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark folder {BENCHMARKS} is not beside the checkout")
    return BENCHMARKS


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Small nets run far faster on one thread, and CI machines are shared: use one everywhere."""
    import torch

    torch.set_num_threads(1)
