"""Answers for the soundness fuzz that do not go through verikit's own code paths: onnxruntime checks
of counterexamples, an exact MILP for small Gemm + (Leaky)ReLU nets, and a sampling + PGD falsifier."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import numpy_helper
from scipy.optimize import Bounds, LinearConstraint, milp

# The MILP's answer counts only outside this band around 0 of min over the box of max_r (c_r . y - d_r):
# its `sat` needs a point with the slack below -BAND in float64, its `unsat` a proven lower bound above
# BAND (HiGHS's feasibility tolerance, 1e-7, only ever lowers that bound).
BAND = 1e-6


@dataclass
class Clause:
    """An AND of rows over the outputs: coefficients [R, n_out] @ y <= rhs [R]."""

    coefficients: np.ndarray
    rhs: np.ndarray

    def slack(self, y: np.ndarray) -> np.ndarray:
        """max_r (c_r . y - d_r) for outputs y [N, n_out]: <= 0 where the clause holds."""
        return (y @ self.coefficients.T - self.rhs).max(-1)


@dataclass
class SpecRegion:
    """One input box (float64 [n], exactly as written in the file) and its unsafe clauses."""

    lower: np.ndarray
    upper: np.ndarray
    clauses: list[Clause]

    def holds(self, x: np.ndarray) -> bool:
        """Whether x [n] lies in the box, in float64 with no tolerance."""
        return bool(np.all(x >= self.lower) and np.all(x <= self.upper))


# ---- onnxruntime --------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _session(path: str, modified: int) -> onnxruntime.InferenceSession:
    """One onnxruntime session per model file and modification time, on one thread."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime's flat outputs [N, n_out] (float64) at float32(x) for flat inputs x [N, n_in]."""
    session = _session(str(path), Path(path).stat().st_mtime_ns)
    info = session.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in info.shape]
    rows = [session.run(None, {info.name: row.astype(np.float32).reshape(shape)})[0].reshape(-1)
            for row in np.asarray(x, dtype=np.float64).reshape(len(x), -1)]
    return np.stack(rows).astype(np.float64)


def confirmed(path: Path, regions: list[SpecRegion], x: np.ndarray) -> bool:
    """The counterexample rule: x lies in some region's box exactly (float64), and onnxruntime's output
    at float32(x) satisfies one of that region's clauses with no tolerance."""
    y = run_onnx(path, x[None])
    return any(region.holds(x) and min(float(c.slack(y)[0]) for c in region.clauses) <= 0
               for region in regions)


# ---- projected gradient descent in float64 ------------------------------------------------------------
def pgd_minimize(graph64, lower: np.ndarray, upper: np.ndarray, objective: Callable[[torch.Tensor], torch.Tensor],
                 starts: torch.Tensor, steps: int = 20) -> torch.Tensor:
    """Points [P, n] from `starts` after sign-gradient steps lowering objective(outputs [P, n_out]) -> [P],
    each step clamped to the box; the step shrinks from 1/8 of the box width."""
    low, high = torch.from_numpy(lower), torch.from_numpy(upper)
    x, width = starts.clone(), high - low
    for step in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(graph64.forward_flat(x)).sum(), x)
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x - width / 8 * (1 - step / steps) * grad.sign(), low), high)
    return x.detach()


def uniform(region: SpecRegion, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` uniform points [count, n] of the region's box (pinned inputs keep their exact value)."""
    low, high = torch.from_numpy(region.lower), torch.from_numpy(region.upper)
    u = torch.rand(count, low.numel(), generator=generator, dtype=torch.float64)
    return torch.minimum(low + u * (high - low), high)


def falsify(path: Path, graph64, regions: list[SpecRegion], seed: int, samples: int = 256,
            steps: int = 30) -> np.ndarray | None:
    """A confirmed counterexample, or None: in each region, PGD on the spec's slack (the best clause's
    largest row) from the 32 best of `samples` uniform points; the 4 lowest points are tried."""
    generator = torch.Generator().manual_seed(seed)
    for region in regions:
        rows = [(torch.from_numpy(c.coefficients), torch.from_numpy(c.rhs)) for c in region.clauses]
        slack = lambda y: torch.stack([(y @ a.T - b).amax(-1) for a, b in rows], -1).amin(-1)  # noqa: E731
        x = uniform(region, samples, generator)
        with torch.no_grad():
            starts = x[torch.argsort(slack(graph64.forward_flat(x)))[:32]]
        x = torch.cat([starts, pgd_minimize(graph64, region.lower, region.upper, slack, starts, steps)])
        with torch.no_grad():
            order = torch.argsort(slack(graph64.forward_flat(x)))
        for candidate in x[order[:4]].numpy():
            if confirmed(path, [region], candidate):
                return candidate
    return None


# ---- exact MILP for Gemm + (Leaky)ReLU nets -----------------------------------------------------------
@dataclass
class DenseLayer:
    """y = weight @ x + bias, then max(y, alpha y) when alpha is not None (ReLU: alpha = 0)."""

    weight: np.ndarray
    bias: np.ndarray
    alpha: float | None = None


def read_dense_layers(path: Path) -> list[DenseLayer] | None:
    """The net as a chain of Gemm layers with optional Relu / LeakyRelu after each, read from the ONNX
    file with onnx.numpy_helper; None when it has any other op or is not a chain."""
    model = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    layers: list[DenseLayer] = []
    current = model.graph.input[0].name
    for node in model.graph.node:
        if node.input[0] != current:
            return None
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and not attributes.get("transA", 0):
            weight = weights[node.input[1]] * attributes.get("alpha", 1.0)
            weight = weight if attributes.get("transB", 0) else weight.T
            bias = weights[node.input[2]] * attributes.get("beta", 1.0) if len(node.input) > 2 else 0.0
            layers.append(DenseLayer(weight, np.broadcast_to(bias, weight.shape[:1]).copy()))
        elif node.op_type in ("Relu", "LeakyRelu") and layers and layers[-1].alpha is None:
            layers[-1].alpha = 0.0 if node.op_type == "Relu" else float(attributes.get("alpha", 0.01))
        else:
            return None
        current = node.output[0]
    return layers if layers and layers[-1].alpha is None else None


def dense_forward(layers: list[DenseLayer], x: np.ndarray) -> np.ndarray:
    """The net's outputs at x [n], in float64."""
    for layer in layers:
        x = layer.weight @ x + layer.bias
        x = x if layer.alpha is None else np.maximum(x, layer.alpha * x)
    return x


def interval_bounds(layers: list[DenseLayer], lower: np.ndarray, upper: np.ndarray) -> list[tuple]:
    """(lower, upper) of every layer's pre-activation over the box, by interval arithmetic in float64,
    widened by 1e-9 relative so rounding never makes them too tight."""
    bounds, low, high = [], lower, upper
    for layer in layers:
        positive, negative = np.maximum(layer.weight, 0), np.minimum(layer.weight, 0)
        z_low = positive @ low + negative @ high + layer.bias
        z_high = positive @ high + negative @ low + layer.bias
        pad = 1e-9 * (1 + np.maximum(np.abs(z_low), np.abs(z_high)))
        bounds.append((z_low - pad, z_high + pad))
        if layer.alpha is not None:
            low, high = np.maximum(z_low, layer.alpha * z_low), np.maximum(z_high, layer.alpha * z_high)
    return bounds


class _Program:
    """A MILP under construction: variables with bounds, rows lo <= A v <= hi, the binary ones marked."""

    def __init__(self):
        self.lower, self.upper, self.binary, self.rows = [], [], [], []

    def variables(self, lower: np.ndarray, upper: np.ndarray, binary: bool = False) -> np.ndarray:
        """New variables with these bounds; returns their indices."""
        start = len(self.lower)
        self.lower += list(lower)
        self.upper += list(upper)
        self.binary += [binary] * len(lower)
        return np.arange(start, len(self.lower))

    def row(self, terms: dict[int, float], low: float, high: float) -> None:
        """The constraint low <= sum(coefficient * variable) <= high, terms as {variable: coefficient}."""
        self.rows.append((terms, low, high))

    def solve(self, cost: dict[int, float]):
        """scipy's milp result for minimising sum(cost[v] * v)."""
        matrix = np.zeros((len(self.rows), len(self.lower)))
        for r, (terms, _, _) in enumerate(self.rows):
            for index, value in terms.items():
                matrix[r, index] += value
        objective = np.zeros(len(self.lower))
        objective[list(cost)] = list(cost.values())
        return milp(objective, integrality=np.array(self.binary, dtype=int),
                    bounds=Bounds(np.array(self.lower), np.array(self.upper)),
                    constraints=[LinearConstraint(matrix, [r[1] for r in self.rows], [r[2] for r in self.rows])],
                    options={"mip_rel_gap": 1e-7, "time_limit": 30})


def _encode_layer(program: _Program, layer: DenseLayer, inputs: np.ndarray, bounds: tuple) -> np.ndarray:
    """z = W h + b, then h' = max(z, alpha z) by a big-M encoding with one binary per neuron (fixed where
    the interval bounds settle the sign); returns the layer's output variables."""
    low, high = bounds
    z = program.variables(low, high)
    for k in range(len(z)):
        program.row({z[k]: 1.0, **{int(i): -w for i, w in zip(inputs, layer.weight[k])}}, layer.bias[k], layer.bias[k])
    if layer.alpha is None:
        return z
    alpha = layer.alpha
    active = program.variables((low >= 0).astype(float), (high > 0).astype(float), binary=True)
    h = program.variables(np.maximum(low, alpha * low), np.maximum(high, alpha * high))
    for k in range(len(z)):
        program.row({h[k]: 1.0, z[k]: -1.0}, 0.0, np.inf)                      # h >= z
        program.row({h[k]: 1.0, z[k]: -alpha}, 0.0, np.inf)                    # h >= alpha z
        # h <= z + (1 - alpha)(-low)(1 - a): equality with z when active
        program.row({h[k]: 1.0, z[k]: -1.0, active[k]: -(1 - alpha) * low[k]}, -np.inf, -(1 - alpha) * low[k])
        # h <= alpha z + (1 - alpha) high a: equality with alpha z when inactive
        program.row({h[k]: 1.0, z[k]: -alpha, active[k]: -(1 - alpha) * high[k]}, -np.inf, 0.0)
    return h


@dataclass
class ClauseAnswer:
    """The MILP's min over the box of the clause's slack: `lowest`, a proven lower bound, and `value`,
    the slack at `x`, the best point found, computed in float64."""

    lowest: float
    value: float
    x: np.ndarray | None


def clause_minimum(layers: list[DenseLayer], region: SpecRegion, clause: Clause) -> ClauseAnswer:
    """min over x in the box of max_r (c_r . y(x) - d_r), exactly, by a MILP solved with HiGHS."""
    program = _Program()
    x = program.variables(region.lower, region.upper)
    values = x
    for layer, bounds in zip(layers, interval_bounds(layers, region.lower, region.upper)):
        values = _encode_layer(program, layer, values, bounds)
    (t,) = program.variables(np.array([-np.inf]), np.array([np.inf]))
    for coefficients, rhs in zip(clause.coefficients, clause.rhs):
        program.row({t: -1.0, **{int(i): c for i, c in zip(values, coefficients)}}, -np.inf, rhs)  # c.y - d <= t
    result = program.solve({t: 1.0})
    if result.x is None:
        raise RuntimeError(f"the exact MILP failed: {result.message}")
    lowest = getattr(result, "mip_dual_bound", None)
    lowest = result.fun if lowest is None or not np.isfinite(lowest) else lowest
    point = np.clip(result.x[x], region.lower, region.upper)
    value = float(clause.slack(dense_forward(layers, point)[None])[0])  # recomputed without the solver's tolerances
    return ClauseAnswer(min(lowest, value), value, point)


@dataclass
class ExactAnswer:
    """`sat` (with a witness onnxruntime confirms), `unsat`, or `borderline` (within BAND of the boundary,
    or a MILP point onnxruntime does not confirm); `lowest`: min slack over clauses and regions."""

    status: str
    lowest: float
    witness: np.ndarray | None = None


def exact_answer(path: Path, layers: list[DenseLayer], regions: list[SpecRegion]) -> ExactAnswer:
    """Decide the spec exactly: sat iff some clause of some region has negative minimum slack."""
    answers = [(region, clause_minimum(layers, region, clause)) for region in regions for clause in region.clauses]
    lowest = min(answer.lowest for _, answer in answers)
    for region, answer in answers:
        if answer.value < -BAND and confirmed(path, [region], answer.x):
            return ExactAnswer("sat", lowest, answer.x)
    if lowest > BAND:
        return ExactAnswer("unsat", lowest)
    return ExactAnswer("borderline", lowest)
