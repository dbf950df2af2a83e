"""ONNX import: every benchmark network loads and matches onnxruntime; bad files fail clearly."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, TensorProto

from conftest import BENCHMARKS, benchmark_networks
from verikit.errors import ModelError
from verikit.onnx_import import load_model
from verikit.onnx_runtime import evaluate

# float32 arithmetic in a different summation order: errors stay near 1e-6 of the output scale.
TOLERANCE = 1e-4


@pytest.mark.parametrize("path", benchmark_networks(), ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_benchmark_network_matches_onnxruntime(path):
    graph = load_model(path, check=False)
    x = torch.rand(3, graph.input_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ours = graph.forward_flat(x).double().numpy()
    reference = evaluate(path, graph, x.numpy())
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= TOLERANCE * (1 + np.abs(reference).max())


def _save(tmp_path, nodes, inputs, outputs, initializers=(), name="model.onnx", opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, path)
    return path


def test_unsupported_ops_are_reported_together_with_node_names(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Erf", ["x"], ["a"], name="erf_1"),
             helper.make_node("Relu", ["a"], ["b"], name="relu_1"),
             helper.make_node("Sin", ["b"], ["y"], name="sin_1")]
    path = _save(tmp_path, nodes, [x], [y])
    with pytest.raises(ModelError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "Erf" in message and "'erf_1'" in message and "Sin" in message and "'sin_1'" in message
    assert str(path) in message and "plugin" in message


def test_corrupt_and_truncated_files(tmp_path):
    good = BENCHMARKS / "test" / "test_tiny.onnx"
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    for path in (truncated, garbage):
        with pytest.raises(ModelError) as caught:
            load_model(path)
        assert str(path) in str(caught.value)
    with pytest.raises(ModelError, match="file not found"):
        load_model(tmp_path / "missing.onnx")


def test_legacy_initializers_listed_as_inputs_pick_the_real_input():
    graph = load_model(BENCHMARKS / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx")
    assert graph.input_name == "input" and graph.input_shape == (1, 1, 1, 5)
    assert graph.output_size == 5


def test_forward_mismatch_is_an_error(tmp_path, monkeypatch):
    import verikit.onnx_runtime as runtime

    path = BENCHMARKS / "test" / "test_small.onnx"
    graph = load_model(path, check=False)
    monkeypatch.setattr(runtime, "evaluate", lambda p, g, x: np.ones((len(x), g.output_size)) * 1e3)
    with pytest.raises(ModelError, match="differs from onnxruntime"):
        runtime.check_against_onnxruntime(graph, path)


def test_second_outputs_are_refused_clearly(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1, 1, 2, 2])
    nodes = [helper.make_node("MaxPool", ["x"], ["pooled", "indices"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Identity", ["indices"], ["y"], name="copy_indices")]
    path = _save(tmp_path, nodes, [x], [y])
    with pytest.raises(ModelError) as caught:
        load_model(path)
    assert "'copy_indices'" in str(caught.value) and "indices" in str(caught.value)
    assert "multi-output" in str(caught.value)


def _mlp_with(tmp_path, change) -> str:
    """A small MLP written after `change(model)` edits its proto."""
    from netgen import mlp

    model = onnx.load(mlp(tmp_path / "net.onnx", "Relu", widths=(4,), inputs=3, outputs=2))
    change(model)
    onnx.save(model, tmp_path / "changed.onnx")
    return str(tmp_path / "changed.onnx")


def _set_weight(model, value: float) -> None:
    tensor = model.graph.initializer[0]
    weights = onnx.numpy_helper.to_array(tensor).copy()
    weights[0, 0] = value
    tensor.CopyFrom(onnx.numpy_helper.from_array(weights, tensor.name))


@pytest.mark.parametrize("change, message", [
    (lambda m: setattr(m.graph.initializer[0], "data_type", 91), "cannot be read"),
    (lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 7), "element type INT64"),
    (lambda m: _set_weight(m, float("inf")), "non-finite"),
    (lambda m: _set_weight(m, float("nan")), "non-finite"),
    (lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[0], "dim_value", 0), "of size 0"),
], ids=["unknown-initializer-type", "integer-input", "inf-weight", "nan-weight", "zero-batch"])
def test_corrupt_contents_are_one_clear_error(tmp_path, change, message):
    path = _mlp_with(tmp_path, change)
    with pytest.raises(ModelError, match=message) as raised:
        load_model(path)
    assert raised.value.path == path


def _fill(model, value: float) -> None:
    """Every floating initializer set to `value`."""
    for tensor in model.graph.initializer:
        weights = np.full_like(onnx.numpy_helper.to_array(tensor), value)
        tensor.CopyFrom(onnx.numpy_helper.from_array(weights, tensor.name))


def test_weights_that_overflow_float32_are_not_blamed_on_a_layer_rule(tmp_path):
    path = _mlp_with(tmp_path, lambda m: _fill(m, 3e38))  # finite weights whose products overflow
    with pytest.raises(ModelError, match="onnxruntime's own output is not finite"):
        load_model(path)
