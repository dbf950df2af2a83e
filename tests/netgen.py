"""Random small ONNX networks covering every built-in op family, for soundness tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class NetBuilder:
    """Appends nodes with random weights to a growing ONNX graph; `save` writes the model."""

    def __init__(self, input_shape: tuple[int, ...], seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.initializers = [], []
        self.input_shape = input_shape
        self.current, self.shape, self.count = "x", input_shape, 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def constant(self, array: np.ndarray) -> str:
        name = self._name("w")
        self.initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def op(self, op_type: str, *extra_inputs: str, source: str | None = None, shape=None, **attributes) -> str:
        output = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, [source or self.current, *extra_inputs], [output],
                                           name=output, **attributes))
        self.current, self.shape = output, shape if shape is not None else self.shape
        return output

    def gemm(self, width: int) -> str:
        fan_in = self.shape[-1]
        w = self.constant(self.rng.normal(0, 1 / np.sqrt(fan_in), (width, fan_in)))
        b = self.constant(self.rng.normal(0, 0.1, width))
        return self.op("Gemm", w, b, transB=1, shape=(1, width))

    def conv(self, channels: int, kernel: int = 3, stride: int = 1, pad: int = 0) -> str:
        _, c, h, w = self.shape
        weight = self.constant(self.rng.normal(0, 1 / np.sqrt(c * kernel * kernel), (channels, c, kernel, kernel)))
        bias = self.constant(self.rng.normal(0, 0.1, channels))
        out = ((h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1)
        return self.op("Conv", weight, bias, kernel_shape=[kernel, kernel], strides=[stride, stride],
                       pads=[pad] * 4, shape=(1, channels, *out))

    def pool(self, kind: str, kernel: int = 2, stride: int = 2) -> str:
        _, c, h, w = self.shape
        out = ((h - kernel) // stride + 1, (w - kernel) // stride + 1)
        return self.op(kind, kernel_shape=[kernel, kernel], strides=[stride, stride], shape=(1, c, *out))

    def batchnorm(self) -> str:
        c = self.shape[1]
        scale, shift = self.constant(self.rng.uniform(0.5, 1.5, c)), self.constant(self.rng.normal(0, 0.2, c))
        mean, var = self.constant(self.rng.normal(0, 0.2, c)), self.constant(self.rng.uniform(0.5, 2, c))
        return self.op("BatchNormalization", scale, shift, mean, var)

    def flatten(self) -> str:
        return self.op("Flatten", axis=1, shape=(1, int(np.prod(self.shape[1:]))))

    def save(self, path: Path, opset: int = 13) -> Path:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.input_shape))
        y = helper.make_tensor_value_info(self.current, TensorProto.FLOAT, list(self.shape))
        graph = helper.make_graph(self.nodes, "random", [x], [y], initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        onnx.save(model, path)
        return path


def mlp(path: Path, activation: str = "Relu", widths=(8, 8), inputs: int = 4, outputs: int = 3, seed=0) -> Path:
    net = NetBuilder((1, inputs), seed)
    for width in widths:
        net.gemm(width)
        net.op(activation, **({"alpha": 0.1} if activation == "LeakyRelu" else {}))
    net.gemm(outputs)
    return net.save(path)


def cnn(path: Path, pool: str = "AveragePool", batchnorm: bool = True, activation: str = "Relu", seed=0) -> Path:
    net = NetBuilder((1, 1, 8, 8), seed)
    net.conv(3, kernel=3, stride=1, pad=1)
    if batchnorm:
        net.batchnorm()
    net.op(activation)
    net.conv(4, kernel=3, stride=2, pad=0)
    net.op(activation)
    net.pool(pool, kernel=2, stride=1)
    net.flatten()
    net.gemm(3)
    return net.save(path)


def residual(path: Path, projection: bool = False, seed=0) -> Path:
    """conv -> relu -> [conv -> relu -> conv] + shortcut (identity or 1x1 stride-2 conv) -> relu -> fc."""
    net = NetBuilder((1, 2, 6, 6), seed)
    net.conv(3, kernel=3, pad=1)
    block_in = net.op("Relu")
    stride = 2 if projection else 1
    net.conv(3, kernel=3, stride=stride, pad=1)
    net.op("Relu")
    main = net.conv(3, kernel=3, pad=1)
    main_shape = net.shape
    if projection:
        net.current, net.shape = block_in, (1, 3, 6, 6)
        shortcut = net.conv(3, kernel=1, stride=2, pad=0)
    else:
        shortcut = block_in
    net.op("Add", shortcut, source=main, shape=main_shape)
    net.op("Relu")
    net.flatten()
    net.gemm(3)
    return net.save(path)


def tiny_net(path: Path) -> Path:
    """The hand-checked 2-2-1 ReLU net: z = [x1 + x2 + 0.5, x1 - x2], y = 2 relu(z1) - relu(z2) + 0.25."""
    net = NetBuilder((1, 2))
    w1, b1 = net.constant(np.array([[1.0, 1.0], [1.0, -1.0]])), net.constant(np.array([0.5, 0.0]))
    net.op("Gemm", w1, b1, transB=1, shape=(1, 2))
    net.op("Relu")
    w2, b2 = net.constant(np.array([[2.0, -1.0]])), net.constant(np.array([0.25]))
    net.op("Gemm", w2, b2, transB=1, shape=(1, 1))
    return net.save(path)


def every_family(folder: Path) -> dict[str, Path]:
    """One random net per op family, written into `folder`."""
    return {
        "relu-mlp": mlp(folder / "relu.onnx", "Relu"),
        "leaky-mlp": mlp(folder / "leaky.onnx", "LeakyRelu", seed=1),
        "sigmoid-mlp": mlp(folder / "sigmoid.onnx", "Sigmoid", seed=2),
        "tanh-mlp": mlp(folder / "tanh.onnx", "Tanh", seed=3),
        "atan-mlp": mlp(folder / "atan.onnx", "Atan", seed=4),
        "cnn-avgpool-bn": cnn(folder / "cnn_avg.onnx", "AveragePool", True),
        "cnn-maxpool": cnn(folder / "cnn_max.onnx", "MaxPool", False, seed=5),
        "cnn-sigmoid": cnn(folder / "cnn_sig.onnx", "AveragePool", True, "Sigmoid", seed=6),
        "residual-identity": residual(folder / "res_id.onnx", False, seed=7),
        "residual-projection": residual(folder / "res_proj.onnx", True, seed=8),
    }
