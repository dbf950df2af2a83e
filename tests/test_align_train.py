"""The Align trainers through `verikit train` and the Python API: a one-epoch align-ada run exports a
model (population statistics) that `verikit verify` decides a spec on; population statistics make the
eval-mode net equal the batch-statistics net on the set they come from; bad input is one message and
exit 2; --resume continues exactly; the alignment score is a cosine with its shuffled control below it."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from test_train_cli import _train_epochs, robustness_spec

from verikit.cli import main
from verikit.trainers.align.alignment import measure_alignment
from verikit.trainers.align.network import set_population_statistics
from verikit.trainers.align.plugin import AlignOptions
from verikit.trainers.architectures import build
from verikit.trainers.data import load_data
from verikit.trainers.run import get_trainer

pytest.importorskip("sklearn")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_one_epoch_align_ada_exports_a_model_verify_decides(tmp_path):
    out = tmp_path / "ada.onnx"
    result = invoke("train", "align-ada", "--data", "digits", "--arch", "ntk-conv:width=8", "--epochs", 1,
                    "--lr", 2.0, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    data = load_data("digits", seed=0)
    spec = tmp_path / "spec.vnnlib"
    robustness_spec(spec, data.x_test[0].numpy(), int(data.y_test[0]), eps=0.002)
    verdict = invoke("verify", out, spec, "--timeout", 20, "--workers", 1, "--json")
    assert verdict.exit_code == 0, verdict.output
    assert json.loads(verdict.output)["status"] in ("sat", "unsat")


def test_population_statistics_reproduce_the_batch_statistics_of_their_set():
    model = build("ntk-conv:width=6", (1, 8, 8), 10, seed=2).double()
    x = load_data("digits").x_train[:300].double()
    with torch.no_grad():
        model.train()
        batch = model(x)
        set_population_statistics(model, x)
        population = model(x)
    assert not model.training
    torch.testing.assert_close(population, batch, rtol=1e-8, atol=1e-8)
    with torch.no_grad():  # on another set they differ: the statistics are really the training set's
        other = load_data("digits").x_test[:100].double()
        model.train()
        assert not torch.allclose(model(other), model.eval()(other), atol=1e-3)


@pytest.mark.parametrize("args, message", [
    (["align-zero", "--arch", "mlp"], "ntk-conv"),
    (["fa", "--arch", "ntk-conv:width=0"], "width"),
    (["dfa", "--arch", "mnist-small:width=8"], "does not take"),
    (["align-ada", "--arch", "ntk-conv:width=4", "--batch-size", 1], "batch"),
])
def test_bad_input_is_one_message_and_exit_2(tmp_path, args, message):
    result = invoke("train", *args, "--epochs", 1, "--out", tmp_path / "m.onnx", "-q")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # refused before any work: no log, checkpoint or model


def test_without_arch_an_align_trainer_builds_its_own_ntk_net(tmp_path):
    result = invoke("train", "align-zero", "--epochs", 1, "--out", tmp_path / "m.onnx", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_resume_continues_exactly(tmp_path):
    trainer, data = get_trainer("align-ada"), load_data("digits", seed=3)
    whole = build("ntk-conv:width=4", data.input_shape, 10, seed=3)
    trainer.train(whole, data, AlignOptions(epochs=2, lr=2.0, seed=3))
    options = AlignOptions(epochs=2, lr=2.0, seed=3, checkpoint=str(tmp_path / "run.ckpt"))
    _train_epochs(trainer, build("ntk-conv:width=4", data.input_shape, 10, seed=3), data, options, stop_after=1)
    options.resume = True
    resumed = build("ntk-conv:width=4", data.input_shape, 10, seed=3)
    trainer.train(resumed, data, options)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_alignment_score_is_a_cosine_above_its_shuffled_control():
    data = load_data("digits", seed=0)
    model = build("ntk-conv:width=16", data.input_shape, 10, seed=0)
    alignment = measure_alignment(model, data, AlignOptions(epochs=2, lr=2.0), probes=4, batch=8)
    assert len(alignment.scores) == len(alignment.controls) == 3
    assert all(-1 <= s <= 1 for s in alignment.scores + alignment.controls)
    assert all(s > c for s, c in zip(alignment.scores[1:], alignment.controls[1:]))
