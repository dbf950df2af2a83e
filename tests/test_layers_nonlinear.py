"""Nonlinear layer rules (Relu, LeakyRelu, Sigmoid, Tanh, Atan, MaxPool, the example Softsign):
forward against onnxruntime, interval soundness, clear rejections, and sound backward steps."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from verikit.bounds import Interval
from verikit.errors import ModelError
from verikit.graph import NodeInfo
from verikit.layers.base import RELAXATION_MODES
from verikit.layers.maxpool import MaxPool
from verikit.layers.relu import LeakyRelu, Relu
from verikit.layers.s_shaped import Atan, Sigmoid, Tanh

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "verikit-example"
PLUGIN_MODULE = PLUGIN / "verikit_example" / "softsign.py"


def load_softsign_module():
    """The example plugin's softsign module, loaded from its source file (the plugin is not installed)."""
    spec = importlib.util.spec_from_file_location("verikit_example_softsign_source", PLUGIN_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOFTSIGN_MODULE = load_softsign_module()
RULES = {"Relu": Relu, "LeakyRelu": LeakyRelu, "Sigmoid": Sigmoid, "Tanh": Tanh, "Atan": Atan,
         "MaxPool": MaxPool, "Softsign": SOFTSIGN_MODULE.Softsign}


def one_node_model(op_type: str, input_shape: tuple[int, ...], **attributes,
                   ) -> tuple[onnx.ModelProto, NodeInfo]:
    """A one-node ONNX model x -> y and the NodeInfo the importer would give its rule."""
    node = helper.make_node(op_type, ["x"], ["y"], name=f"{op_type.lower()}_0", **attributes)
    graph = helper.make_graph([node], "one_node",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    output_shape = tuple(d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim)
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    values = {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}
    return model, NodeInfo(node.name, op_type, values, ("x",), {}, (tuple(input_shape),), output_shape)


def node_info(op_type: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...] = (),
              **attributes) -> NodeInfo:
    """A hand-made NodeInfo (for nodes onnx's own shape inference would refuse or need not see)."""
    return NodeInfo(f"{op_type.lower()}_0", op_type, attributes, ("x",), {}, (input_shape,),
                    output_shape or input_shape)


CASES = [
    ("Relu", (1, 7), {}),
    ("LeakyRelu", (1, 7), {"alpha": 0.2}),
    ("LeakyRelu", (1, 2, 3), {}),
    ("Sigmoid", (1, 3, 4), {}),
    ("Tanh", (1, 6), {}),
    ("Atan", (1, 6), {}),
    ("Softsign", (1, 2, 5), {}),
    ("MaxPool", (1, 2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("MaxPool", (1, 2, 5, 5), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("MaxPool", (1, 1, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ("MaxPool", (1, 3, 9), {"kernel_shape": [3], "strides": [2]}),
    ("MaxPool", (2, 1, 5, 4), {"kernel_shape": [2, 3], "auto_pad": "VALID"}),
]
IDS = [f"{op}-{'x'.join(map(str, shape))}-{i}" for i, (op, shape, _) in enumerate(CASES)]


def build(op_type: str, shape: tuple[int, ...], attributes: dict):
    model, info = one_node_model(op_type, shape, **attributes)
    return model, RULES[op_type].build(info)


@pytest.mark.parametrize("op_type, shape, attributes", CASES, ids=IDS)
def test_forward_matches_onnxruntime(op_type, shape, attributes):
    model, rule = build(op_type, shape, attributes)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1)) * 3
    ours = rule.forward(x)
    assert ours.shape == (4, *rule.output_shape)
    for sample, value in zip(x, ours):
        expected = session.run(None, {"x": sample.numpy()})[0]
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-6, atol=1e-6)


def random_box(shape: tuple[int, ...], batch: int = 3, seed: int = 0) -> Interval:
    """Boxes of mixed kinds in float64: some wide, some narrow, some points, all signs."""
    generator = torch.Generator().manual_seed(seed)
    center = torch.randn(batch, *shape, generator=generator, dtype=torch.float64) * 2
    radius = torch.rand(batch, *shape, generator=generator, dtype=torch.float64) ** 3 * 4
    radius[0].view(-1)[::4] = 0.0
    return Interval(center - radius, center + radius)


def sample_points(bound: Interval, count: int, seed: int = 2) -> torch.Tensor:
    """[count, B, *shape] points inside the box, corners included."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.rand(count, *bound.lower.shape, generator=generator, dtype=bound.lower.dtype)
    t[:count // 10] = t[:count // 10].round()
    return bound.lower + t * (bound.upper - bound.lower)


@pytest.mark.parametrize("op_type, shape, attributes", CASES, ids=IDS)
def test_interval_contains_1000_sampled_outputs(op_type, shape, attributes):
    _, rule = build(op_type, shape, attributes)
    box = random_box(shape)
    image = rule.interval(box)
    outputs = rule.forward(sample_points(box, 1000).reshape(-1, *shape)).reshape(1000, *image.lower.shape)
    assert (outputs >= image.lower - 1e-12).all() and (outputs <= image.upper + 1e-12).all()
    # the interval is attained at the box's lower and upper corners (all these ops are monotone)
    assert torch.equal(image.lower, rule.forward(box.lower))
    assert torch.equal(image.upper, rule.forward(box.upper))


@pytest.mark.parametrize("mode", RELAXATION_MODES)
@pytest.mark.parametrize("op_type, shape, attributes", CASES, ids=IDS)
def test_backward_with_relaxation_is_an_upper_bound(op_type, shape, attributes, mode):
    _, rule = build(op_type, shape, attributes)
    box = random_box(shape, batch=2, seed=5)
    generator = torch.Generator().manual_seed(6)
    slopes = torch.rand(box.lower.shape, generator=generator, dtype=torch.float64) * 2 - 0.5
    if not rule.kinks and rule.offers("initial_parameters"):  # S-shaped: tangent positions, clamped into [0, 1]
        positions = (box.lower.shape[0], 2, *box.lower.shape[1:])
        slopes = torch.rand(positions, generator=generator, dtype=torch.float64) * 2 - 0.5
    relaxation = rule.relax(box, mode, lower_slope=slopes if mode == "optimizable" else None)
    coefficients = torch.randn(2, 5, *rule.output_shape, generator=generator, dtype=torch.float64)
    (pushed,), bias = rule.backward(coefficients, relaxation)
    assert pushed.shape == (2, 5, *shape) and bias.shape == (2, 5)

    points = sample_points(box, 500)                                   # [P, B, *shape]
    outputs = rule.forward(points.reshape(-1, *shape)).reshape(500, 2, 1, *rule.output_shape)
    value = (coefficients * outputs).flatten(3).sum(-1)                 # [P, B, K]
    bound = (pushed * points.unsqueeze(2)).flatten(3).sum(-1) + bias
    assert (value <= bound + 1e-9).all()


def test_maxpool_backward_scatters_the_transpose_of_the_window_gather():
    _, rule = build("MaxPool", (1, 2, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]})
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1, 2, 7, 6, generator=generator, dtype=torch.float64)
    windows = rule.windows(x, 0.0)
    v = torch.randn(windows.shape, generator=generator, dtype=torch.float64)
    assert torch.allclose((windows * v).sum(), (x * rule.scatter(v)).sum())


@pytest.mark.parametrize("attributes, message", [
    ({"kernel_shape": [2, 2], "dilations": [2, 2]}, "dilations"),
    ({"kernel_shape": [2, 2], "ceil_mode": 1}, "ceil_mode"),
    ({"kernel_shape": [2, 2], "storage_order": 1}, "storage_order"),
    ({"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}, "auto_pad"),
    ({"kernel_shape": [2, 2], "pads": [2, 0, 2, 0]}, "pads"),
    ({"strides": [2, 2]}, "kernel_shape"),
    ({"kernel_shape": [2, 2, 2]}, "input shape"),
])
def test_maxpool_rejects_unsupported_attributes_naming_the_node(attributes, message):
    with pytest.raises(ModelError, match=message) as error:
        MaxPool.build(node_info("MaxPool", (1, 1, 6, 6), (1, 1, 3, 3), **attributes))
    assert "maxpool_0" in str(error.value) and "fix:" in str(error.value)


def test_leaky_relu_rejects_alpha_outside_unit_interval():
    with pytest.raises(ModelError, match="alpha=1.5") as error:
        LeakyRelu.build(node_info("LeakyRelu", (1, 4), alpha=1.5))
    assert "leakyrelu_0" in str(error.value)


def test_rules_keep_dtype_and_survive_to():
    rule = LeakyRelu.build(node_info("LeakyRelu", (1, 4), alpha=0.3)).to(torch.float64)
    box = Interval(torch.full((1, 1, 4), -1.0), torch.full((1, 1, 4), 2.0))
    assert rule.alpha == 0.3 and rule.relax(box).upper_slope.dtype == torch.float32
    pool = MaxPool.build(node_info("MaxPool", (1, 1, 4, 4), (1, 1, 2, 2), kernel_shape=[2, 2], strides=[2, 2]))
    relaxation = pool.to(torch.float64).relax(Interval(-torch.ones(1, 1, 1, 4, 4), torch.ones(1, 1, 1, 4, 4)))
    assert relaxation.weights.dtype == torch.float32 and relaxation.weights.shape == (1, 1, 1, 2, 2, 4)


def test_hooks_register_every_op_type_with_its_distribution():
    from importlib.metadata import entry_points

    from verikit.layers import maxpool, relu, s_shaped
    from verikit.plugins import PluginManager

    manager = PluginManager()
    for module in (relu, s_shaped, maxpool):
        manager.register(module, module.__name__, "verikit")
    manager.register(SOFTSIGN_MODULE, "example_softsign", "verikit-example")
    layers = manager.registry.entries["layer"]
    for op_type in ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Atan", "MaxPool", "Softsign"):
        assert layers[op_type].provider is RULES[op_type]
    assert layers["Softsign"].distribution == "verikit-example"
    declared = {ep.name: ep.value for ep in entry_points(group="verikit")}
    assert declared["layers_maxpool"] == "verikit.layers.maxpool"
