"""`verikit explain`: PNG pictures and .npy maps for a model trained by `verikit train interpret` and for an
exported one; a model without a GAP head gets one message for CAM (exit 2) while GradCAM++ and IG work;
bad input is exit 2 without a traceback."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from verikit.cli import main
from verikit.interpret import from_sequential
from verikit.interpret.maps import cam_of
from verikit.trainers.architectures import build
from verikit.trainers.export import export_onnx

pytest.importorskip("sklearn")
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_pictures(folder, stem, map_shape):
    for name in ("image.png", f"{stem}.png", f"{stem}_overlay.png"):
        content = (folder / name).read_bytes()
        assert content.startswith(PNG) and len(content) > 200, name
    values = np.load(folder / f"{stem}.npy")
    assert values.shape == map_shape and np.isfinite(values).all() and np.abs(values).max() > 0


def test_explain_a_model_trained_by_the_interpret_trainer(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("variant: int2\nsteps: 2\nstep_size: 0.05\nwarmup: 0.2\nramp_end: 0.5\nbatch_size: 100\n")
    model = tmp_path / "int2.onnx"
    trained = invoke("train", "interpret", "--data", "digits", "--arch", "small-gap", "--epochs", 1,
                     "--eps", 0.05, "--config", config, "--out", model, "-q")
    assert trained.exit_code == 0, trained.output
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).random((1, 8, 8)).astype(np.float32))
    for method, stem, shape in (("cam", "cam_class3", (2, 2)), ("gradcam++", "gradcampp_class3", (2, 2)),
                                ("ig", "ig_class3", (8, 8))):
        result = invoke("explain", model, "--input", x, "--label", 3, "--method", method, "--steps", 8,
                        "--out", tmp_path / "maps")
        assert result.exit_code == 0, result.output
        assert_pictures(tmp_path / "maps", stem, shape)


def test_explain_an_exported_model_writes_its_cam(tmp_path):
    network = build("small-gap", (1, 16, 16), 10, seed=4)
    path = tmp_path / "gap.onnx"
    export_onnx(network, (1, 16, 16), path)
    x = np.random.default_rng(1).random((16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = invoke("explain", path, "--input", tmp_path / "x.npy", "--label", 0, "--label", 7, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        expected = cam_of(from_sequential(network, (1, 16, 16)), torch.as_tensor(x).reshape(1, 1, 16, 16).repeat(
            2, 1, 1, 1), torch.tensor([0, 7]))
    for index, label in enumerate((0, 7)):
        assert_pictures(tmp_path, f"cam_class{label}", (4, 4))
        assert np.allclose(np.load(tmp_path / f"cam_class{label}.npy"), expected[index].numpy(), atol=1e-5)
    again = invoke("explain", path, "--input", tmp_path / "x.npy", "--label", 0, "--out", tmp_path)
    assert again.exit_code == 2 and "--force" in again.output and "Traceback" not in again.output


def test_a_model_without_a_gap_head(tmp_path):
    path = tmp_path / "plain.onnx"
    export_onnx(build("mnist-small", (1, 8, 8), 10, seed=0), (1, 8, 8), path)
    np.save(tmp_path / "x.npy", np.full((1, 1, 8, 8), 0.5, dtype=np.float32))
    cam = invoke("explain", path, "--input", tmp_path / "x.npy", "--out", tmp_path / "maps")
    assert cam.exit_code == 2 and "no global average pooling" in cam.output and "Traceback" not in cam.output
    for method in ("gradcam++", "ig"):
        result = invoke("explain", path, "--input", tmp_path / "x.npy", "--method", method, "--out", tmp_path / "maps")
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args, message", [(["--label", 10], "is not a class"), (["--method", "lime"], "lime"),
                                           (["--input", "wrong.npy"], "entries but the model takes")])
def test_bad_input_is_one_message_and_exit_2(tmp_path, args, message):
    path = tmp_path / "gap.onnx"
    export_onnx(build("small-gap", (1, 8, 8), 10, seed=0), (1, 8, 8), path)
    np.save(tmp_path / "x.npy", np.zeros((8, 8), dtype=np.float32))
    np.save(tmp_path / "wrong.npy", np.zeros((7, 8), dtype=np.float32))
    options = {"--input": str(tmp_path / "x.npy"), "--out": str(tmp_path / "maps")}
    for key, value in zip(args[::2], args[1::2]):
        options[key] = str(tmp_path / value) if key == "--input" else value
    result = invoke("explain", path, *[item for pair in options.items() for item in pair])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
