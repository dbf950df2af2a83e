"""`verikit train`: every trainer exports a model that `verikit verify` decides a spec on; bad input is
one message and exit 2; the same seed gives the same model; --resume continues where a run stopped."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from verikit.cli import main
from verikit.onnx_runtime import evaluate
from verikit.trainers.data import load_data
from verikit.trainers.run import train

pytest.importorskip("sklearn")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def robustness_spec(path, x: np.ndarray, label: int, eps: float, classes: int = 10) -> None:
    """A VNN-LIB spec: some other class scores at least the label's within eps of x (clipped to [0, 1])."""
    lines = [f"(declare-const X_{i} Real)" for i in range(x.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i, value in enumerate(x.reshape(-1)):
        lines.append(f"(assert (>= X_{i} {max(0.0, value - eps):.8f}))")
        lines.append(f"(assert (<= X_{i} {min(1.0, value + eps):.8f}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label)
    lines.append(f"(assert (or {others}))")
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("trainer", ["standard", "pgd-at", "ibp", "crown-ibp", "singleprop"])
def test_one_epoch_exports_a_model_verify_decides(tmp_path, trainer):
    config = tmp_path / "run.yaml"
    config.write_text("steps: 3\n" if trainer == "pgd-at" else "kappa_end: 0.5\n")
    out = tmp_path / "m.onnx"
    result = invoke("train", trainer, "--data", "digits", "--arch", "mlp", "--epochs", 1, "--eps", 0.05,
                    "--config", config, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == 1 and float(rows[0]["eps"]) == pytest.approx(0.05)
    data = load_data("digits", seed=0)
    x = data.x_test[0].numpy()
    spec = tmp_path / "spec.vnnlib"
    robustness_spec(spec, x, int(data.y_test[0]), eps=0.002)
    verdict = invoke("verify", out, spec, "--timeout", 20, "--workers", 1, "--json")
    assert verdict.exit_code == 0, verdict.output
    assert json.loads(verdict.output)["status"] in ("sat", "unsat")


def test_exported_model_matches_torch_in_onnxruntime(tmp_path):
    from verikit.api import load_model
    from verikit.trainers.architectures import build
    from verikit.trainers.export import export_onnx

    model = build("mnist-small", (1, 8, 8), 10, seed=1)
    path = export_onnx(model, (1, 8, 8), tmp_path / "s.onnx")
    x = torch.rand(5, 1, 8, 8)
    runtime = evaluate(path, load_model(path), x.flatten(1).numpy())
    assert np.allclose(runtime, model(x).detach().numpy(), atol=1e-5)


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    result = invoke("train", "standard", "--epochs", 1, "--arch", "mlp", "--out", out, "-q")
    assert result.exit_code == 2 and "--force" in result.output
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "no trainer named 'nosuch'"),
    (["standard", "--data", "nosuch"], "no dataset named 'nosuch'"),
    (["standard", "--arch", "nosuch"], "no architecture named 'nosuch'"),
    (["standard", "--eps", "1.5"], "outside the data domain"),
    (["standard", "--epochs", "0"], "epochs and batch_size must be at least 1"),
    (["singleprop", "--config", "CONFIG"], "option 'epochs' must be int"),
    (["standard", "--config", "UNKNOWN"], "unknown option colour"),
    (["standard", "--data", "NPZ"], "x has shape (20, 5) and y (19,)"),
])
def test_bad_input_is_one_message_and_exit_2(tmp_path, args, message):
    (tmp_path / "c.yaml").write_text("epochs: many\n")
    (tmp_path / "u.yaml").write_text("colour: red\n")
    np.savez(tmp_path / "bad.npz", x=np.zeros((20, 5)), y=np.zeros(19, dtype=int))
    swap = {"CONFIG": tmp_path / "c.yaml", "UNKNOWN": tmp_path / "u.yaml", "NPZ": tmp_path / "bad.npz"}
    result = invoke("train", *[swap.get(a, a) for a in args], "--out", tmp_path / "m.onnx", "-q")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and message in result.output
    assert "Traceback" not in result.output


def test_same_seed_same_model_and_resume_continues(tmp_path):
    options = dict(epochs=2, batch_size=200, eps=0.05, seed=4)
    first = train("singleprop", "digits", "mlp", **options)
    second = train("singleprop", "digits", "mlp", **options)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    checkpoint = str(tmp_path / "run.ckpt")
    from verikit.trainers.architectures import build
    from verikit.trainers.config import build_options
    from verikit.trainers.run import get_trainer

    trainer, data = get_trainer("singleprop"), load_data("digits", seed=4)
    settings = build_options(trainer.Options, options)
    settings.checkpoint = checkpoint
    stopped = build("mlp", data.input_shape, 10, seed=4)
    _train_epochs(trainer, stopped, data, settings, stop_after=1)
    settings.resume = True
    resumed = trainer.train(build("mlp", data.input_shape, 10, seed=4), data, settings)
    for a, b in zip(first.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


class Interrupt(Exception):
    pass


def _train_epochs(trainer, model, data, options, stop_after: int) -> None:
    """Train, interrupting (as Ctrl-C would) once `stop_after` epochs are checkpointed."""
    from verikit.trainers.base import Progress

    class Stop(Progress):
        def epoch(self, epoch, metrics):
            if epoch + 1 == stop_after:
                self.done = True

        def step(self, metrics):
            if getattr(self, "done", False):
                raise Interrupt

    try:
        trainer.train(model, data, options, Stop())
    except Interrupt:
        pass
