"""Linear layer rules (linear, conv, pooling, normalization, shape) on one-node ONNX models:
forward matches onnxruntime, intervals are sound and exactly |L| r wide, backward is exact, and
unsupported attributes fail naming the node."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper, shape_inference

from verikit.bounds import Interval
from verikit.errors import ModelError
from verikit.graph import NodeInfo
from verikit.layers import conv, linear, normalization, pooling, shape

RNG = np.random.default_rng(0)
BIG = np.iinfo(np.int64).max


def registered_rules() -> dict:
    """op type -> rule class, collected from each module's verikit_layers hook."""
    rules = {}
    for module in (linear, conv, pooling, normalization, shape):
        module.verikit_layers(register=lambda rule: rules.update({op: rule for op in rule.op_types}))
    return rules


RULES = registered_rules()


def w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@dataclass
class Case:
    """One ONNX node: each input is a shape (a computed graph input), an array (a constant) or ''."""

    id: str
    op: str
    inputs: list
    attributes: dict
    opset: int = 13

    def names(self) -> list[str]:
        return ["" if isinstance(v, str) else f"{'c' if isinstance(v, np.ndarray) else 'x'}{i}"
                for i, v in enumerate(self.inputs)]

    def computed(self) -> dict[str, tuple]:
        return {n: v for n, v in zip(self.names(), self.inputs) if isinstance(v, tuple)}

    def constants(self) -> dict[str, np.ndarray]:
        return {n: v for n, v in zip(self.names(), self.inputs) if isinstance(v, np.ndarray)}

    def model(self) -> onnx.ModelProto:
        node = helper.make_node(self.op, self.names(), ["y"], name=f"{self.op.lower()}_node", **self.attributes)
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in self.computed().items()]
        initializers = [numpy_helper.from_array(v, n) for n, v in self.constants().items()]
        output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph([node], self.id, inputs, [output], initializer=initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        return shape_inference.infer_shapes(model, strict_mode=True)

    def node_info(self) -> NodeInfo:
        """What the importer would hand the rule: decoded attributes, constants and static shapes."""
        model = self.model()
        (output,) = model.graph.output
        attributes = {}
        for attribute in model.graph.node[0].attribute:
            value = helper.get_attribute_value(attribute)
            attributes[attribute.name] = value.decode() if isinstance(value, bytes) else value
        shapes = {**self.computed(), **{n: v.shape for n, v in self.constants().items()}}
        return NodeInfo(name=model.graph.node[0].name, op_type=self.op, attributes=attributes,
                        inputs=tuple(self.names()), constants=self.constants(),
                        input_shapes=tuple(shapes.get(n) for n in self.names()),
                        output_shape=tuple(d.dim_value for d in output.type.tensor_type.shape.dim),
                        opset=self.opset)


def case(id: str, op: str, inputs: list, opset: int = 13, **attributes) -> Case:
    return Case(id, op, inputs, attributes, opset)


CASES = [
    # Gemm and MatMul, including every benchmark layout (acasxu x[1,5]·W, test_tiny W·x with 1-D x).
    case("gemm-transB", "Gemm", [(2, 6), w(5, 6), w(5)], transB=1),
    case("gemm-transA-alpha-beta", "Gemm", [(6, 2), w(6, 5), w(1, 5)], transA=1, alpha=0.5, beta=2.0),
    case("gemm-both-transposed-no-C", "Gemm", [(6, 2), w(5, 6)], transA=1, transB=1),
    case("gemm-constant-A", "Gemm", [w(3, 6), (6, 4), w(4)]),
    case("gemm-constant-A-transB", "Gemm", [w(6, 3), (4, 6), w(3, 1)], transA=1, transB=1),
    case("matmul-row-vector", "MatMul", [(1, 5), w(5, 7)], opset=8),
    case("matmul-batched-input", "MatMul", [(2, 3, 4), w(4, 5)]),
    case("matmul-batched-weight", "MatMul", [(3, 4), w(2, 4, 5)]),
    case("matmul-weight-first-1d-input", "MatMul", [w(3, 4), (4,)], opset=14),
    case("matmul-nano-1d", "MatMul", [(1,), w(1, 1)], opset=14),
    case("matmul-1d-input-right", "MatMul", [(4,), w(4, 3)]),
    case("matmul-1d-weight", "MatMul", [(3, 4), w(4)]),
    case("matmul-weight-first-batched", "MatMul", [w(2, 3, 4), (4, 5)]),
    # Elementwise arithmetic with a constant, and residual Add/Sub.
    case("add-constant", "Add", [(1, 5), w(5)]),
    case("add-constant-first-broadcast-up", "Add", [w(3, 1, 5), (1, 5)]),
    case("sub-constant", "Sub", [(1, 5), w(1, 5)], opset=8),
    case("sub-from-constant", "Sub", [w(5), (1, 5)]),
    case("mul-constant", "Mul", [(1, 2, 3), w(2, 1)]),
    case("div-constant", "Div", [(1, 1, 3, 3), np.full((1, 1, 1, 1), 0.3081, np.float32)], opset=9),
    case("neg", "Neg", [(2, 3)]),
    case("residual-add", "Add", [(1, 2, 3, 3), (1, 2, 3, 3)]),
    case("residual-sub-broadcast", "Sub", [(1, 2, 3, 3), (1, 2, 1, 3)]),
    # Convolutions.
    case("conv-stride1-pads", "Conv", [(1, 2, 6, 6), w(3, 2, 3, 3), w(3)], pads=[1, 1, 1, 1]),
    case("conv-stride2-asymmetric-pads", "Conv", [(1, 2, 7, 6), w(3, 2, 3, 3), w(3)], strides=[2, 2],
         pads=[0, 1, 1, 0]),
    case("conv-same-upper", "Conv", [(1, 2, 7, 7), w(3, 2, 4, 4), w(3)], strides=[2, 2], auto_pad="SAME_UPPER"),
    case("conv-same-lower", "Conv", [(1, 2, 6, 6), w(2, 2, 2, 3)], auto_pad="SAME_LOWER"),
    case("conv-valid-dilated", "Conv", [(1, 2, 8, 8), w(3, 2, 3, 3), w(3)], auto_pad="VALID", dilations=[2, 1]),
    case("conv-groups", "Conv", [(1, 4, 5, 5), w(6, 2, 3, 3), w(6)], group=2, pads=[1, 0, 1, 0]),
    case("conv-depthwise-stride2", "Conv", [(1, 3, 6, 6), w(3, 1, 3, 3), w(3)], group=3, strides=[2, 2]),
    case("conv-onnx-batch-2", "Conv", [(2, 2, 5, 5), w(3, 2, 2, 2), w(3)], kernel_shape=[2, 2]),
    case("conv-1d", "Conv", [(1, 2, 9), w(3, 2, 3), w(3)], strides=[2], pads=[1, 1]),
    # Average pooling.
    case("avgpool-4x4-stride4", "AveragePool", [(1, 2, 8, 8)], opset=9, kernel_shape=[4, 4], strides=[4, 4]),
    case("avgpool-pads-excluded", "AveragePool", [(1, 2, 6, 6)], kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1]),
    case("avgpool-asymmetric-pads-included", "AveragePool", [(1, 2, 6, 5)], kernel_shape=[3, 2],
         pads=[1, 0, 0, 1], count_include_pad=1),
    case("avgpool-same-upper", "AveragePool", [(1, 2, 7, 7)], kernel_shape=[3, 3], strides=[2, 2],
         auto_pad="SAME_UPPER"),
    case("avgpool-1d", "AveragePool", [(1, 3, 9)], kernel_shape=[3], strides=[2], pads=[1, 1]),
    case("global-avgpool", "GlobalAveragePool", [(1, 3, 4, 5)]),
    # Batch normalisation.
    case("batchnorm-4d", "BatchNormalization",
         [(1, 3, 4, 4), w(3), w(3), w(3), np.abs(w(3)) + 0.1], epsilon=1e-3),
    case("batchnorm-2d", "BatchNormalization", [(2, 3), w(3), w(3), w(3), np.abs(w(3)) + 0.1]),
    # Shape ops.
    case("flatten", "Flatten", [(1, 2, 3, 4)], opset=9, axis=1),
    case("flatten-negative-axis", "Flatten", [(1, 2, 3, 4)], axis=-2),
    case("flatten-axis-0", "Flatten", [(1, 2, 3)], axis=0),
    case("reshape-0-and-minus-1", "Reshape", [(1, 2, 3, 4), ints(0, -1, 4)]),
    case("reshape-plain", "Reshape", [(1, 2, 3, 4), ints(4, 6)]),
    case("transpose", "Transpose", [(1, 2, 3, 4)], perm=[0, 2, 3, 1]),
    case("transpose-default", "Transpose", [(2, 3, 4)]),
    case("squeeze-attribute", "Squeeze", [(1, 1, 3, 1)], opset=11, axes=[1]),
    case("squeeze-input-negative", "Squeeze", [(1, 3, 1), ints(-1)]),
    case("squeeze-all", "Squeeze", [(1, 3, 1)]),
    case("unsqueeze-attribute", "Unsqueeze", [(1, 3)], opset=11, axes=[0, 3]),
    case("unsqueeze-input", "Unsqueeze", [(1, 3), ints(-1)]),
    case("identity", "Identity", [(1, 4)]),
    case("dropout", "Dropout", [(1, 4), np.array(0.5, np.float32)], opset=12),
    case("concat-with-constant", "Concat", [(1, 2, 3), w(1, 1, 3), (1, 4, 3)], axis=1),
    case("concat-negative-axis", "Concat", [w(1, 2, 2), (1, 2, 3)], axis=-1),
    case("slice-attributes", "Slice", [(1, 4, 5)], opset=9, starts=[1], ends=[3], axes=[2]),
    case("slice-negative-steps", "Slice", [(1, 4, 6, 5), ints(-1, 4), ints(-BIG, 0), ints(2, -1), ints(-1, -2)]),
    case("slice-steps-and-clamping", "Slice", [(1, 4, 6), ints(0, 1), ints(BIG, -1), ints(1, 2), ints(2, 1)]),
    case("pad-noop-opset9", "Pad", [(1, 2, 4, 4)], opset=9, mode="constant", pads=[0] * 8, value=0.0),
    case("pad-value-opset9", "Pad", [(1, 2, 3, 3)], opset=9, pads=[0, 0, 1, 2, 0, 0, 2, 0], value=1.5),
    case("pad-input-form-with-crop", "Pad",
         [(1, 2, 4, 4), ints(0, 0, 1, -1, 0, 1, 2, 0), np.array(-0.5, np.float32)], opset=11),
    case("pad-axes", "Pad", [(1, 2, 3, 3), ints(1, 2, 0, 1), np.array(2.0, np.float32), ints(2, -1)], opset=18),
]


def build(c: Case):
    info = c.node_info()
    return RULES[c.op].build(info), info


def run_onnxruntime(c: Case, samples: list[np.ndarray]) -> np.ndarray:
    session = onnxruntime.InferenceSession(c.model().SerializeToString(), providers=["CPUExecutionProvider"])
    names = list(c.computed())
    outputs = [session.run(None, {n: x[i] for n, x in zip(names, samples)})[0] for i in range(len(samples[0]))]
    return np.stack(outputs)


def random_inputs(rule, batch: int, dtype=torch.float64) -> list[torch.Tensor]:
    return [torch.randn(batch, *s, dtype=dtype) for s in rule.input_shapes]


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_forward_matches_onnxruntime(c):
    rule, info = build(c)
    samples = [RNG.standard_normal((3, *s)).astype(np.float32) for s in c.computed().values()]
    ours = rule.forward(*(torch.from_numpy(x) for x in samples))
    assert tuple(ours.shape) == (3, *info.output_shape)
    np.testing.assert_allclose(ours.numpy(), run_onnxruntime(c, samples), rtol=1e-5, atol=1e-5)


def dense_absolute(rule, radii: list[torch.Tensor]) -> torch.Tensor:
    """|J| r for one box, with J's columns the images of unit vectors (independent of `absolute`)."""
    zeros = [torch.zeros(1, *s, dtype=torch.float64) for s in rule.input_shapes]
    offset = rule.forward(*zeros)
    width = torch.zeros(rule.output_shape, dtype=torch.float64)
    for i, r in enumerate(radii):
        units = torch.eye(r.numel(), dtype=torch.float64).reshape(-1, *r.shape)
        columns = rule.forward(*(units if j == i else z.expand(len(units), *z.shape[1:])
                                  for j, z in enumerate(zeros))) - offset
        width = width + (columns.abs() * r.reshape(-1, *(1,) * len(rule.output_shape))).sum(0)
    return width


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_interval_is_sound_and_exactly_as_wide_as_the_map(c):
    rule = build(c)[0].to(torch.float64)
    centers, radii = random_inputs(rule, 2), [torch.rand(2, *s, dtype=torch.float64) for s in rule.input_shapes]
    bound = rule.interval(*(Interval(m - r, m + r) for m, r in zip(centers, radii)))
    assert bound.lower.shape == (2, *rule.output_shape) and bound.lower.dtype == torch.float64
    for b in range(2):
        directions = [torch.rand(1000, *s, dtype=torch.float64) * 2 - 1 for s in rule.input_shapes]
        directions = [torch.cat([d[:100].sign(), d[100:]]) for d in directions]  # corners too
        outputs = rule.forward(*(m[b] + r[b] * d for m, r, d in zip(centers, radii, directions)))
        assert Interval(bound.lower[b], bound.upper[b]).contains(outputs, tolerance=1e-9)
        expected = dense_absolute(rule, [r[b] for r in radii])
        torch.testing.assert_close(bound.radius[b], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_backward_is_exact(c):
    rule = build(c)[0].to(torch.float64)
    x = random_inputs(rule, 2)
    coefficients = torch.randn(2, 3, *rule.output_shape, dtype=torch.float64)
    pushed, bias = rule.backward(coefficients)
    assert [tuple(p.shape) for p in pushed] == [(2, 3, *s) for s in rule.input_shapes]
    assert tuple(bias.shape) == (2, 3)
    value = (coefficients * rule.forward(*x)[:, None]).flatten(2).sum(-1)
    substituted = sum((p * xi[:, None]).flatten(2).sum(-1) for p, xi in zip(pushed, x)) + bias
    torch.testing.assert_close(value, substituted, rtol=1e-5, atol=1e-5)


def test_every_op_family_is_registered():
    expected = {"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Neg", "Conv", "AveragePool", "GlobalAveragePool",
                "BatchNormalization", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
                "Dropout", "Concat", "Slice", "Pad"}
    assert set(RULES) == expected
    assert all(rule.linear for rule in RULES.values())


def hand_info(op: str, inputs: dict, output_shape: tuple, **attributes) -> NodeInfo:
    """A NodeInfo built by hand; inputs map names to a shape (computed) or an array (constant)."""
    constants = {n: v for n, v in inputs.items() if isinstance(v, np.ndarray)}
    shapes = tuple(v.shape if isinstance(v, np.ndarray) else v for v in inputs.values())
    return NodeInfo(name="bad_node", op_type=op, attributes=attributes, inputs=tuple(inputs),
                    constants=constants, input_shapes=shapes, output_shape=output_shape)


REJECTED = [
    ("constant-over-x", hand_info("Div", {"c": w(1, 5), "x": (1, 5)}, (1, 5)), "not linear"),
    ("product-of-computed", hand_info("Mul", {"x": (1, 5), "y": (1, 5)}, (1, 5)), "not linear"),
    ("matmul-of-computed", hand_info("MatMul", {"x": (1, 5), "y": (5, 2)}, (1, 2)), "not linear"),
    ("divide-by-zero", hand_info("Div", {"x": (1, 2), "c": np.zeros(2, np.float32)}, (1, 2)), "zeros"),
    ("gemm-computed-C", hand_info("Gemm", {"x": (1, 5), "w": w(5, 2), "c": (1, 2)}, (1, 2)), "C operand"),
    ("conv-computed-kernel", hand_info("Conv", {"x": (1, 1, 4, 4), "k": (1, 1, 2, 2)}, (1, 1, 3, 3)),
     "constants"),
    ("conv-bad-auto-pad", hand_info("Conv", {"x": (1, 1, 4, 4), "k": w(1, 1, 2, 2)}, (1, 1, 3, 3),
                                    auto_pad="SAME"), "auto_pad"),
    ("avgpool-ceil-mode", hand_info("AveragePool", {"x": (1, 1, 5, 5)}, (1, 1, 3, 3), kernel_shape=[2, 2],
                                    strides=[2, 2], ceil_mode=1), "ceil_mode"),
    ("avgpool-dilated", hand_info("AveragePool", {"x": (1, 1, 5, 5)}, (1, 1, 3, 3), kernel_shape=[2, 2],
                                  dilations=[2, 2]), "dilated"),
    ("pad-reflect", hand_info("Pad", {"x": (1, 4), "p": ints(0, 1, 0, 1)}, (1, 6), mode="reflect"), "reflect"),
    ("batchnorm-training", hand_info("BatchNormalization", {"x": (1, 2), **{k: w(2) for k in "sbmv"}}, (1, 2),
                                     training_mode=1), "training_mode"),
    ("dropout-training", hand_info("Dropout", {"x": (1, 4), "r": w(1), "t": np.array(True)}, (1, 4)), "training"),
    ("reshape-computed-shape", hand_info("Reshape", {"x": (1, 4), "s": (2,)}, (2, 2)), "computed"),
    ("slice-computed-starts", hand_info("Slice", {"x": (1, 4), "s": (1,), "e": ints(2)}, (1, 2)), "computed"),
    ("squeeze-non-unit-dim", hand_info("Squeeze", {"x": (1, 4)}, (1,), axes=[1]), "squeeze"),
    ("reshape-shape-mismatch", hand_info("Reshape", {"x": (1, 4), "s": ints(2, 2)}, (4, 1)), "shape inference"),
]


@pytest.mark.parametrize("info, words", [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_unsupported_nodes_are_rejected_by_name(info, words):
    with pytest.raises(ModelError) as caught:
        RULES[info.op_type].build(info)
    message = str(caught.value)
    assert "'bad_node'" in message and info.op_type in message and words in message
