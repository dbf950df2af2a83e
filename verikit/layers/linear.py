"""Linear layers: Gemm and MatMul with a constant weight, elementwise arithmetic with one constant
operand (Add, Sub, Mul, Div, Neg: y = x * scale + shift), and residual Add/Sub of two computed tensors.

Values are [N, *onnx_shape]; ONNX's numpy-style broadcasting is made explicit by `align` (leading ones
after the sample dimension) and undone in `backward` by `reduce_to` (summing over broadcast dims).
"""
from __future__ import annotations

from math import prod

import numpy as np
import torch

from verikit.bounds import Relaxation
from verikit.graph import NodeInfo
from verikit.hookspecs import hookimpl
from verikit.layers.base import LinearRule, flatten_rows
from verikit.lp.encode import LPModel


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 torch copy of an ONNX constant."""
    return torch.as_tensor(np.array(array, dtype=np.float32))


def text(value: str | bytes) -> str:
    """An ONNX string attribute as str (the importer decodes bytes; raw onnx gives bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def align(x: torch.Tensor, rank: int) -> torch.Tensor:
    """[N, *shape] -> [N, 1, ..., 1, *shape] with ONNX rank `rank`, as numpy broadcasting pads shapes."""
    missing = rank - (x.dim() - 1)
    return x.reshape(x.shape[0], *(1,) * missing, *x.shape[1:]) if missing > 0 else x


def reduce_to(values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum [L, *broadcast_shape] down to [L, *shape]: the transpose of broadcasting `shape` up."""
    extra = values.dim() - 1 - len(shape)
    if extra > 0:
        values = values.sum(dim=tuple(range(1, 1 + extra)))
    dims = tuple(i + 1 for i, (want, have) in enumerate(zip(shape, values.shape[1:])) if want == 1 and have != 1)
    return values.sum(dim=dims, keepdim=True) if dims else values


def align_indices(indices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Variable indices of an ONNX operand broadcast to `shape` (numpy broadcasting, leading ones first)."""
    return np.broadcast_to(indices.reshape((1,) * (len(shape) - indices.ndim) + indices.shape), shape)


def zero_bias(coefficients: torch.Tensor, rank: int) -> torch.Tensor:
    """The [B, K] zero bias of coefficients [B, K, *shape] (shape of rank `rank`)."""
    return coefficients.new_zeros(coefficients.shape[: coefficients.dim() - rank])


def bias_term(coefficients: torch.Tensor, offset: torch.Tensor, rank: int) -> torch.Tensor:
    """A . offset for coefficients [B, K, *shape] and an offset broadcastable to shape: [B, K] (one
    matrix-vector product: no [B, K, *shape] temporary)."""
    shape = coefficients.shape[coefficients.dim() - rank:]
    extra = offset.dim() - rank
    if extra > 0:  # leading ones beyond the coefficients' rank
        offset = offset.reshape(offset.shape[extra:])
    flat = coefficients.flatten(start_dim=coefficients.dim() - rank)
    return flat @ torch.broadcast_to(offset, shape).reshape(-1)


class ScaleShift(LinearRule):
    """y = x * scale / divisor + shift with constant, broadcast operands (any of them may be absent).

    Handles Add, Sub, Mul, Div and Neg with one constant operand; Add/Sub of two computed tensors is
    delegated to `Residual`. c - x is -x + c; c / x is nonlinear and rejected."""

    mixes = False

    op_types = ("Add", "Sub", "Mul", "Div", "Neg")

    def __init__(self, node: NodeInfo, scale: torch.Tensor | None = None, divisor: torch.Tensor | None = None,
                 shift: torch.Tensor | None = None):
        super().__init__(node)
        self.scale, self.divisor, self.shift = scale, divisor, shift

    @classmethod
    def build(cls, node: NodeInfo) -> LinearRule:
        if len(node.computed_inputs) == 2:
            return Residual.build(node)
        op = node.op_type
        if op == "Neg":
            return cls(node, scale=torch.tensor(-1.0, dtype=torch.float32))
        first = node.constant(0)
        constant = as_tensor(first if first is not None else node.constant(1))
        if op == "Add":
            return cls(node, shift=constant)
        if op == "Mul":
            return cls(node, scale=constant)
        if op == "Sub":
            minus = torch.tensor(-1.0, dtype=torch.float32)
            return cls(node, shift=-constant) if first is None else cls(node, scale=minus, shift=constant)
        if first is not None:
            raise cls.reject(node, "a constant divided by a computed tensor (c / x) is not linear",
                             "divide the computed tensor by the constant instead, or add a plugin for reciprocals")
        if bool((constant == 0).any()):
            raise cls.reject(node, "the constant divisor contains zeros", "fix the model's divisor")
        return cls(node, divisor=constant)

    def _apply(self, x: torch.Tensor, scale: torch.Tensor | None, divisor: torch.Tensor | None) -> torch.Tensor:
        x = align(x, len(self.output_shape))
        if scale is not None:
            x = x * scale
        if divisor is not None:
            x = x / divisor
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._apply(x, self.scale, self.divisor)
        return y if self.shift is None else y + self.shift

    def offset(self, x: torch.Tensor) -> torch.Tensor:
        zero = x.new_zeros(1, *self.output_shape)
        return zero if self.shift is None else zero + self.shift

    def absolute(self, radius: torch.Tensor) -> torch.Tensor:
        scale = None if self.scale is None else self.scale.abs()
        divisor = None if self.divisor is None else self.divisor.abs()
        y = self._apply(radius, scale, divisor)
        return y.expand(y.shape[0], *self.output_shape)

    def backward(self, coefficients: torch.Tensor, relaxation: Relaxation | None = None,
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """A . (x * s / d + c) = (A * s / d) . x + A . c, summed over the dims x was broadcast along."""
        rank = len(self.output_shape)
        flat, lead = flatten_rows(coefficients, rank)
        pushed = reduce_to(self._apply(flat, self.scale, self.divisor), self.input_shapes[0])
        bias = zero_bias(coefficients, rank) if self.shift is None else bias_term(coefficients, self.shift, rank)
        return [pushed.reshape(*lead, *self.input_shapes[0])], bias

    def backward_patches(self, patches, relaxation: Relaxation | None = None):
        """`backward` on CNN-Cert window coefficients (batch norm and friends): each entry times its
        neuron's factor, the shift dotted into the bias. None when the input is broadcast."""
        if tuple(self.input_shapes[0]) != tuple(self.output_shape) or len(self.output_shape) != 4:
            return None
        one = patches.values.new_ones((1,) * (len(self.output_shape) + 1))
        pushed = patches.scaled(self._apply(one, self.scale, self.divisor))
        bias = patches.zero_bias() if self.shift is None else patches.dot(one * self.shift)
        return [pushed], bias

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """One row per output: y = x * (scale / divisor) + shift, operands broadcast to the output."""
        ones = torch.ones(1, *self.output_shape, dtype=torch.float64)
        factor = self._apply(ones, self.scale, self.divisor)[0].numpy()
        shift = self.offset(ones)[0].numpy()
        y = model.free(self.output_shape)
        model.equal(y, align_indices(inputs[0], self.output_shape)[..., None], factor[..., None], shift)
        return y


class Residual(LinearRule):
    """y = x1 + x2 or y = x1 - x2 of two computed tensors (skip connections), with broadcasting.
    Built by ScaleShift.build when both operands are computed."""

    op_types = ()

    def __init__(self, node: NodeInfo, sign: float):
        super().__init__(node)
        self.sign = sign

    @classmethod
    def build(cls, node: NodeInfo) -> "Residual":
        if node.op_type not in ("Add", "Sub"):
            raise cls.reject(node, "the product or quotient of two computed tensors is not linear",
                             "only Add and Sub of two computed tensors are supported")
        return cls(node, 1.0 if node.op_type == "Add" else -1.0)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        rank = len(self.output_shape)
        return align(first, rank) + self.sign * align(second, rank)

    def absolute(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        rank = len(self.output_shape)
        y = align(first, rank) + align(second, rank)
        return y.expand(y.shape[0], *self.output_shape)

    def backward(self, coefficients: torch.Tensor, relaxation: Relaxation | None = None,
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        rank = len(self.output_shape)
        flat, lead = flatten_rows(coefficients, rank)
        first, second = (reduce_to(flat, shape).reshape(*lead, *shape) for shape in self.input_shapes)
        return [first, self.sign * second], zero_bias(coefficients, rank)

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """One row per output: y = x1 +/- x2 (broadcast)."""
        y = model.free(self.output_shape)
        pair = np.stack([align_indices(x, self.output_shape) for x in inputs], axis=-1)
        model.equal(y, pair, np.array([1.0, self.sign]))
        return y

    def backward_patches(self, patches, relaxation: Relaxation | None = None):
        """`backward` on CNN-Cert window coefficients: both operands get the windows (sign applied).
        None when an operand is broadcast."""
        if any(tuple(shape) != tuple(self.output_shape) for shape in self.input_shapes):
            return None
        return [patches, patches.with_values(self.sign * patches.values)], patches.zero_bias()


def matmul_shapes(left: tuple[int, ...], right: tuple[int, ...],
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """numpy matmul's promotions made explicit: (left, right, product) shapes of one rank >= 2,
    1-D operands promoted to a row (left) or a column (right); None when the shapes do not fit."""
    left = (1, *left) if len(left) == 1 else tuple(left)
    right = (*right, 1) if len(right) == 1 else tuple(right)
    rank = max(len(left), len(right))
    left, right = (1,) * (rank - len(left)) + left, (1,) * (rank - len(right)) + right
    if left[-1] != right[-2]:
        return None
    try:
        batch = tuple(np.broadcast_shapes(left[:-2], right[:-2]))
    except ValueError:
        return None
    return left, right, (*batch, left[-2], right[-1])


class MatMul(LinearRule):
    """y = x @ W or y = W @ x (numpy matmul semantics, any ranks) plus an optional constant bias;
    also Gemm: y = alpha * A' @ B' + beta * C with one of A, B constant and C constant.

    `x_shape` is the input's shape after Gemm's optional transpose, 1-D promotion and leading ones;
    `weight` has the matching rank, so torch.matmul broadcasts them exactly as ONNX does."""

    op_types = ("MatMul", "Gemm")

    def __init__(self, node: NodeInfo, weight: torch.Tensor, weight_first: bool, transpose_input: bool,
                 x_shape: tuple[int, ...], bias: torch.Tensor | None):
        super().__init__(node)
        self.weight, self.bias = weight, bias
        self.weight_first, self.transpose_input, self.x_shape = weight_first, transpose_input, x_shape

    @classmethod
    def build(cls, node: NodeInfo) -> "MatMul":
        if len(node.inputs) > 2 and node.inputs[2] and node.constant(2) is None:
            raise cls.reject(node, "a computed C operand is not supported", "make C a constant initializer")
        if len(node.computed_inputs) != 1 or node.constant(0) is None and node.constant(1) is None:
            raise cls.reject(node, "needs one computed factor and one constant weight (a product of two "
                                   "computed tensors is not linear)", "make one operand a constant initializer")
        weight_first = node.constant(0) is not None
        weight = np.asarray(node.constant(0) if weight_first else node.constant(1), dtype=np.float64)
        x_shape = tuple(node.input_shapes[1 if weight_first else 0])
        transpose_input, bias = False, None
        if node.op_type == "Gemm":
            weight, transpose_input, bias = cls._gemm_terms(node, weight, weight_first)
            if transpose_input:
                x_shape = x_shape[::-1]
        shapes = matmul_shapes(weight.shape, x_shape) if weight_first else matmul_shapes(x_shape, weight.shape)
        if shapes is None or prod(shapes[2]) != prod(node.output_shape):
            raise cls.reject(node, f"shapes {x_shape} and weight {weight.shape} do not fit a matrix product "
                                   f"with output {node.output_shape}", "check the exported model")
        x_canonical = shapes[1] if weight_first else shapes[0]
        weight = weight.reshape(shapes[0] if weight_first else shapes[1])
        return cls(node, as_tensor(weight), weight_first, transpose_input, x_canonical, bias)

    @classmethod
    def _gemm_terms(cls, node: NodeInfo, weight: np.ndarray, weight_first: bool,
                    ) -> tuple[np.ndarray, bool, torch.Tensor | None]:
        """Gemm's alpha and transposes folded into the weight; beta * C as the bias."""
        attributes = node.attributes
        alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
        trans_a, trans_b = bool(attributes.get("transA", 0)), bool(attributes.get("transB", 0))
        if weight.ndim != 2:
            raise cls.reject(node, f"Gemm needs 2-D operands, the weight is {weight.ndim}-D", "use MatMul")
        if weight_first:
            weight, transpose_input = (weight.T if trans_a else weight), trans_b
        else:
            weight, transpose_input = (weight.T if trans_b else weight), trans_a
        weight = weight if alpha == 1.0 else alpha * weight
        c = node.constant(2)
        bias = None if c is None or beta == 0.0 else as_tensor(beta * np.asarray(c, dtype=np.float64))
        return weight, transpose_input, bias

    def _product(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The matrix product of [N, *x_onnx_shape] with `weight`, shaped [N, *output_shape]."""
        n = x.shape[0]
        if self.transpose_input:
            x = x.transpose(-1, -2)
        x = x.reshape(n, *self.x_shape)
        y = torch.matmul(weight, x) if self.weight_first else torch.matmul(x, weight)
        return y.reshape(n, *self.output_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._product(x, self.weight)
        return y if self.bias is None else y + self.bias

    def offset(self, x: torch.Tensor) -> torch.Tensor:
        zero = x.new_zeros(1, *self.output_shape)
        return zero if self.bias is None else zero + self.bias

    def absolute(self, radius: torch.Tensor) -> torch.Tensor:
        return self._product(radius, self.weight.abs())

    def backward(self, coefficients: torch.Tensor, relaxation: Relaxation | None = None,
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """A . (x W + b) = (A W^T) . x + A . b (or W^T A for W x), summed over broadcast batch dims."""
        rank = len(self.output_shape)
        flat, lead = flatten_rows(coefficients, rank)
        product_shape = (*np.broadcast_shapes(self.x_shape[:-2], self.weight.shape[:-2]),
                         *(self.weight.shape[-2:-1] if self.weight_first else self.x_shape[-2:-1]),
                         *(self.x_shape[-1:] if self.weight_first else self.weight.shape[-1:]))
        flat = flat.reshape(flat.shape[0], *product_shape)
        transposed = self.weight.transpose(-1, -2)
        pushed = torch.matmul(transposed, flat) if self.weight_first else torch.matmul(flat, transposed)
        pushed = reduce_to(pushed, self.x_shape)
        if self.transpose_input:
            pushed = pushed.transpose(-1, -2)
        pushed = pushed.reshape(*lead, *self.input_shapes[0])
        bias = zero_bias(coefficients, rank) if self.bias is None else bias_term(coefficients, self.bias, rank)
        return [pushed], bias

    def encode_lp(self, model: LPModel, inputs: list[np.ndarray], bounds: list) -> np.ndarray:
        """One row per output y[..., i, j] = sum_k x[..., i, k] W[..., k, j] + b (or W x), over the k terms."""
        x = np.swapaxes(inputs[0], -1, -2) if self.transpose_input else inputs[0]
        x, weight = x.reshape(self.x_shape), self.weight.double().numpy()
        if self.weight_first:  # x^T as [..., 1, j, k] against W as [..., i, 1, k]
            x, weight = np.swapaxes(x, -1, -2)[..., None, :, :], weight[..., :, None, :]
        else:  # x as [..., i, 1, k] against W^T as [..., 1, j, k]
            x, weight = x[..., :, None, :], np.swapaxes(weight, -1, -2)[..., None, :, :]
        columns, coefficients = np.broadcast_arrays(x, weight)
        shape = (*self.output_shape, columns.shape[-1])
        bias = 0.0 if self.bias is None else np.broadcast_to(self.bias.double().numpy(), self.output_shape)
        y = model.free(self.output_shape)
        model.equal(y, columns.reshape(shape), coefficients.reshape(shape), bias)
        return y


@hookimpl
def verikit_layers(register) -> None:
    register(ScaleShift)
    register(MatMul)
