"""Seeded random ONNX models and VNN-LIB specs for the soundness fuzz (tests/fuzz.py): small nets over
every supported op, and specs whose thresholds make some clauses sat and others unsat."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from onnx import numpy_helper

from fuzz_oracle import Clause, SpecRegion, run_onnx
from netgen import NetBuilder

ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh")


class FuzzNet(NetBuilder):
    """NetBuilder plus the ops the fuzz draws: MatMul + Add, convolutions with asymmetric pads,
    activations with their attributes, residual blocks and Reshape."""

    def integers(self, values: list[int]) -> str:
        """An int64 initializer (a Reshape's shape), by name."""
        name = self._name("i")
        self.initializers.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def activation(self, kind: str) -> str:
        """Relu, LeakyRelu (with a random alpha), Sigmoid or Tanh on the current tensor."""
        attributes = {"alpha": round(float(self.rng.uniform(0.05, 0.3)), 3)} if kind == "LeakyRelu" else {}
        return self.op(kind, **attributes)

    def dense(self, width: int) -> str:
        """A fully connected layer: Gemm, or MatMul followed by an Add of the bias."""
        if self.rng.random() < 0.5:
            return self.gemm(width)
        fan_in = self.shape[-1]
        self.op("MatMul", self.constant(self.rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, width))), shape=(1, width))
        return self.op("Add", self.constant(self.rng.normal(0, 0.1, width)))

    def padded_conv(self, channels: int, kernel: int, stride: int, pads: list[int]) -> str:
        """Conv with ONNX pads [top, left, bottom, right], which may all differ."""
        _, c, h, w = self.shape
        weight = self.constant(self.rng.normal(0, 1 / np.sqrt(c * kernel * kernel), (channels, c, kernel, kernel)))
        bias = self.constant(self.rng.normal(0, 0.1, channels))
        top, left, bottom, right = pads
        out = ((h + top + bottom - kernel) // stride + 1, (w + left + right - kernel) // stride + 1)
        return self.op("Conv", weight, bias, kernel_shape=[kernel, kernel], strides=[stride, stride],
                       pads=list(pads), shape=(1, channels, *out))

    def padded_pool(self, kind: str, stride: int, pads: list[int]) -> str:
        """A 2 x 2 MaxPool or AveragePool with ONNX pads [top, left, bottom, right] (AveragePool's
        default count_include_pad=0 averages over the window's part inside the input)."""
        _, c, h, w = self.shape
        top, left, bottom, right = pads
        out = ((h + top + bottom - 2) // stride + 1, (w + left + right - 2) // stride + 1)
        return self.op(kind, kernel_shape=[2, 2], strides=[stride, stride], pads=list(pads), shape=(1, c, *out))

    def residual(self, *steps: Callable[[], str]) -> str:
        """The Add of the current (computed) tensor and the tensor that `steps`, called in turn, compute
        from it; they must keep its shape."""
        block_in, shape = self.current, self.shape
        for step in steps:
            step()
        assert self.shape == shape, (self.shape, shape)
        return self.op("Add", block_in, source=self.current, shape=shape)

    def flat(self) -> str:
        """Flatten, or a Reshape to [1, n]."""
        if self.rng.random() < 0.5:
            return self.flatten()
        size = int(np.prod(self.shape[1:]))
        return self.op("Reshape", self.integers([1, size]), shape=(1, size))


@dataclass
class ModelInfo:
    """A generated model: its file, family ('exact': Gemm + (Leaky)ReLU only), shapes and op types."""

    path: Path
    family: str
    input_shape: tuple[int, ...]
    n_outputs: int
    ops: tuple[str, ...]

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.input_shape))


def _exact_net(net: FuzzNet, outputs: int) -> None:
    """1-2 hidden Gemm layers of at most 12 neurons in all, each followed by Relu or LeakyRelu."""
    layers = int(net.rng.integers(1, 3))
    for _ in range(layers):
        net.gemm(int(net.rng.integers(2, 12 // layers + 1)))
        net.activation(str(net.rng.choice(["Relu", "LeakyRelu"])))
    net.gemm(outputs)


def _dense_net(net: FuzzNet, outputs: int) -> None:
    """1-2 dense layers (Gemm or MatMul + Add) with mixed activations, then maybe a residual block."""
    for _ in range(int(net.rng.integers(1, 3))):
        net.dense(int(net.rng.integers(3, 9)))
        net.activation(str(net.rng.choice(ACTIVATIONS)))
    if net.rng.random() < 0.5:
        width = net.shape[-1]
        net.residual(lambda: net.dense(width), lambda: net.activation(str(net.rng.choice(ACTIVATIONS))),
                     lambda: net.dense(width))
    net.dense(outputs)


def _image_net(net: FuzzNet, outputs: int) -> None:
    """A strided conv with asymmetric pads, maybe BatchNorm, a residual conv block and a pool, then
    Flatten / Reshape and dense layers."""
    rng = net.rng
    kernel, stride = int(rng.integers(2, 4)), int(rng.integers(1, 3))
    net.padded_conv(int(rng.integers(1, 4)), kernel, stride, [int(p) for p in rng.integers(0, 2, 4)])
    if rng.random() < 0.5:
        net.batchnorm()
    net.activation(str(rng.choice(ACTIVATIONS)))
    if rng.random() < 0.4:
        same = lambda: net.padded_conv(net.shape[1], 3, 1, [1, 1, 1, 1])  # noqa: E731 (keeps the shape)
        net.residual(same, lambda: net.activation(str(rng.choice(ACTIVATIONS))), same)
    if rng.random() < 0.6:
        pads = [int(p) for p in rng.integers(0, 2, 4)] if rng.random() < 0.5 else [0, 0, 0, 0]
        kind, stride = str(rng.choice(["MaxPool", "AveragePool"])), int(rng.integers(1, 3))
        if min(net.shape[2] + pads[0] + pads[2], net.shape[3] + pads[1] + pads[3]) >= 2:  # one window fits
            net.padded_pool(kind, stride, pads)
    net.flat()
    if rng.random() < 0.5:
        net.dense(int(rng.integers(3, 9)))
        net.activation(str(rng.choice(ACTIVATIONS)))
    net.dense(outputs)


def random_model(path: Path, seed: int, family: str | None = None) -> ModelInfo:
    """A small random net: half are 'exact' (Gemm + (Leaky)ReLU on 2-4 inputs, decided by the MILP
    oracle), a quarter 'dense' on 2-6 inputs, a quarter 'image' on 1-3 x 4-7 x 4-7 inputs; `family`
    forces one. Pools take full windows only (verikit rejects ceil_mode)."""
    rng = np.random.default_rng(seed)
    drawn = str(rng.choice(["exact", "exact", "dense", "image"]))
    family = family or drawn
    outputs = int(rng.integers(2, 4))
    if family == "image":
        shape = (1, int(rng.integers(1, 4)), int(rng.integers(4, 8)), int(rng.integers(4, 8)))
    else:
        shape = (1, int(rng.integers(2, 5 if family == "exact" else 7)))
    net = FuzzNet(shape, seed + 1)
    {"exact": _exact_net, "dense": _dense_net, "image": _image_net}[family](net, outputs)
    net.save(Path(path))
    return ModelInfo(Path(path), family, shape, outputs, tuple(node.op_type for node in net.nodes))


# ---- specs --------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One output condition as written: `lhs op d`, with lhs = sum of coefficient * Y_j or, for the
    pair form `(<= Y_i Y_j)`, Y_i - Y_j with d = 0."""

    terms: list[tuple[float, int]]
    op: str
    d: float = 0.0
    pair: bool = False

    def normalized(self, n_outputs: int) -> tuple[np.ndarray, float]:
        """The row as c . y <= rhs, the form VNN-LIB readers produce."""
        c = np.zeros(n_outputs)
        for coefficient, index in self.terms:
            c[index] += coefficient
        return (c, self.d) if self.op == "<=" else (-c, -self.d)

    def text(self) -> str:
        """The row as a VNN-LIB comparison."""
        if self.pair:
            return f"(<= Y_{self.terms[0][1]} Y_{self.terms[1][1]})"
        parts = [f"Y_{j}" if a == 1.0 else f"(* {a!r} Y_{j})" for a, j in self.terms]
        if len(parts) == 2 and self.terms[1][0] == -1.0:
            lhs = f"(- {parts[0]} Y_{self.terms[1][1]})"
        else:
            lhs = parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})"
        return f"({self.op} {lhs} {self.d!r})"


def _random_row(rng: np.random.Generator, n_outputs: int) -> Row:
    """A single bound on one output, a difference, a weighted sum, or the pair form Y_i <= Y_j."""
    i, j = (int(k) for k in rng.choice(n_outputs, 2, replace=False))
    form = str(rng.choice(["bound", "difference", "weighted", "pair"], p=[0.3, 0.25, 0.3, 0.15]))
    op = str(rng.choice(["<=", ">="]))
    if form == "bound":
        return Row([(1.0, i)], op)
    if form in ("difference", "pair"):
        return Row([(1.0, i), (-1.0, j)], "<=", pair=form == "pair")
    weights = [round(float(rng.uniform(0.2, 2)) * float(rng.choice([-1, 1])), 3) for _ in range(2)]
    return Row([(weights[0], i), (weights[1], j)], op)


def _random_box(rng: np.random.Generator, n: int, style: str, pinned: float) -> tuple[np.ndarray, np.ndarray]:
    """A box of the given width style ('tiny' 1e-4, 'medium', 'wide' 1-2), with a share `pinned` of its
    inputs fixed (lower = upper) at values float32 cannot hold, like 0.1 or 5-decimal ones."""
    width = {"tiny": 1e-4, "medium": float(rng.uniform(0.02, 0.4)), "wide": float(rng.uniform(1, 2))}[style]
    center = rng.uniform(-1, 1, n)
    lower, upper = np.round(center - width / 2, 7), np.round(center + width / 2, 7)
    for index in np.flatnonzero(rng.random(n) < pinned):
        value = float(rng.choice([0.1, 0.3, -0.7, round(float(rng.uniform(-1, 1)), 5)]))
        lower[index] = upper[index] = value
    return lower, upper


@dataclass
class _Outputs:
    """onnxruntime's outputs y [N, n_out] at uniform points x [N, n] of a box, and the slope [n_out, n] of
    a least-squares affine fit to them: it points to the corner where a row is lowest on a near-linear net."""

    x: np.ndarray
    y: np.ndarray
    slope: np.ndarray

    @classmethod
    def sample(cls, path: Path, lower: np.ndarray, upper: np.ndarray, rng: np.random.Generator) -> "_Outputs":
        """128 uniform points of the box, their outputs and the fit."""
        x = lower + rng.random((128, lower.size)) * (upper - lower)
        y = run_onnx(path, x)
        fit = np.linalg.lstsq(np.hstack([x, np.ones((len(x), 1))]), y, rcond=None)[0]
        return cls(x, y, fit[:-1].T)


def _set_thresholds(rng: np.random.Generator, rows: list[Row], path: Path, lower: np.ndarray, upper: np.ndarray,
                    outputs: _Outputs) -> None:
    """Thresholds d near the outputs at an anchor point, the corner where the affine fit puts the first
    row lowest: each row's value there, off by up to 30% of its sampled spread either way, so that some
    clauses are sat and others unsat (those with every row lowered, when the corner is the true minimum)."""
    n_outputs = outputs.y.shape[1]
    normalized = [row.normalized(n_outputs)[0] for row in rows if not row.pair]
    if not normalized:
        return
    anchor = np.where(normalized[0] @ outputs.slope > 0, lower, upper)
    anchor_y = run_onnx(path, anchor[None])[0]
    for row, c in zip([row for row in rows if not row.pair], normalized):
        values = np.append(outputs.y @ c, anchor_y @ c)
        rhs = float(anchor_y @ c + rng.uniform(-0.3, 0.3) * (np.ptp(values) + 1e-4))
        row.d = float(f"{rhs if row.op == '<=' else -rhs:.8g}")


@dataclass
class SpecInfo:
    """A generated spec: its file, its regions exactly as written, and the features it exercises."""

    path: Path
    regions: list[SpecRegion]
    features: tuple[str, ...]


def random_spec(path: Path, model: ModelInfo, seed: int) -> SpecInfo:
    """A VNN-LIB spec for the model: one row, an AND of rows, an OR of clauses, or an OR of input
    boxes; tiny, medium or wide boxes, some with pinned inputs."""
    rng = np.random.default_rng(seed)
    shape = str(rng.choice(["single", "and", "or", "boxes"]))
    style = str(rng.choice(["tiny", "medium", "wide"], p=[0.25, 0.45, 0.3]))
    pinned = float(rng.choice([0.0, 0.3, 0.7], p=[0.6, 0.25, 0.15]))
    regions, written = [], []
    for _ in range(int(rng.integers(2, 4)) if shape == "boxes" else 1):
        lower, upper = _random_box(rng, model.n_inputs, style, pinned)
        outputs = _Outputs.sample(model.path, lower, upper, rng)
        rows_per_clause = [[_random_row(rng, model.n_outputs) for _ in range(count)]
                           for count in _rows_per_clause(rng, shape)]
        for rows in rows_per_clause:
            _set_thresholds(rng, rows, model.path, lower, upper, outputs)
        regions.append(SpecRegion(lower, upper, [_clause(rows, model.n_outputs) for rows in rows_per_clause]))
        written.append(rows_per_clause)
    features = (shape, style) + (("pinned",) if pinned else ())
    Path(path).write_text(_vnnlib(model, regions, written, rng), encoding="utf-8")
    return SpecInfo(Path(path), regions, features)


def _rows_per_clause(rng: np.random.Generator, shape: str) -> list[int]:
    """How many rows each clause of a region has: 'single' one clause of one row, 'and' one of 2-3 rows,
    'or' 2-3 clauses and 'boxes' 1-2 clauses (in each box) of 1-2 rows."""
    if shape in ("single", "and"):
        return [1 if shape == "single" else int(rng.integers(2, 4))]
    clauses = int(rng.integers(2, 4)) if shape == "or" else int(rng.integers(1, 3))
    return [int(rng.integers(1, 3)) for _ in range(clauses)]


def _clause(rows: list[Row], n_outputs: int) -> Clause:
    """The clause the rows make, as a reader produces it."""
    pairs = [row.normalized(n_outputs) for row in rows]
    return Clause(np.stack([c for c, _ in pairs]), np.array([d for _, d in pairs]))


def _box_atoms(lower: np.ndarray, upper: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Bounds of every input; a pinned one sometimes as (= X_i v)."""
    atoms = []
    for i, (low, high) in enumerate(zip(lower.tolist(), upper.tolist())):
        if low == high and rng.random() < 0.5:
            atoms.append(f"(= X_{i} {low!r})")
        else:
            atoms += [f"(>= X_{i} {low!r})", f"(<= X_{i} {high!r})"]
    return atoms


def _conjunction(atoms: list[str], rows: list[Row]) -> str:
    return f"(and {' '.join(atoms + [row.text() for row in rows])})"


def _vnnlib(model: ModelInfo, regions: list[SpecRegion], written: list[list[list[Row]]],
            rng: np.random.Generator) -> str:
    """The spec's text: one region as top-level asserts, several as an OR of (box and clause) terms."""
    lines = [f"(declare-const X_{i} Real)" for i in range(model.n_inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(model.n_outputs)]
    if len(regions) == 1:
        lines += [f"(assert {atom})" for atom in _box_atoms(regions[0].lower, regions[0].upper, rng)]
        clauses = written[0]
        if len(clauses) == 1:
            lines += [f"(assert {row.text()})" for row in clauses[0]]
        else:
            lines.append(f"(assert (or {' '.join(_conjunction([], rows) for rows in clauses)}))")
    else:
        terms = [_conjunction(_box_atoms(region.lower, region.upper, rng), rows)
                 for region, clauses in zip(regions, written) for rows in clauses]
        lines.append("(assert (or\n  " + "\n  ".join(terms) + "))")
    return "\n".join(lines) + "\n"
