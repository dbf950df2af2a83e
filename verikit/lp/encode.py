"""LP and MILP encodings of a graph, built layer by layer (seed-papers 3.3; Tjeng et al. 2019).

`LPModel` collects variables (bounds, integrality) and sparse rows `lower <= A x <= upper`. Each layer
rule's `encode_lp(model, inputs, bounds)` adds the rows of one node: `inputs` are the variable indices
of its computed inputs (numpy int arrays shaped like their ONNX shapes, one problem), `bounds` their
Intervals (torch, batch of 1); it returns the indices of its output. In an LP (`model.exact` False)
nonlinear rules add relaxations (the ReLU triangle, tangent/chord lines, max-pool window lines); in a
MILP (`exact` True) they add exact encodings with binary variables. `encode_graph` walks the graph;
`LPModel.minimize` solves the LP with HiGHS (dual simplex by default, or interior point) and
`minimize_exact` the MILP with HiGHS's branch and bound, both through scipy.optimize.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from verikit.bounds import Interval
from verikit.errors import PluginError, VerikitError
from verikit.graph import Graph
from verikit.region import LpBall, Region

INF = np.inf
F64 = torch.float64
LP_SOLVERS = {"dual-simplex": "highs-ds", "ipm": "highs-ipm", "auto": "highs"}  # name -> scipy linprog method


@dataclass
class Solution:
    """One solve: `value` = objective at `x`; `bound` = a proven lower bound of the minimum."""

    status: str  # "optimal" | "infeasible" | "limit" (time or node limit) | "failed"
    value: float = np.nan
    bound: float = -INF
    x: np.ndarray | None = None


@dataclass
class LPModel:
    """Variables with bounds and integrality, and sparse rows lower <= sum coefficient * x <= upper."""

    exact: bool = False
    lower: np.ndarray = field(default_factory=lambda: np.zeros(0))
    upper: np.ndarray = field(default_factory=lambda: np.zeros(0))
    integer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    rows: int = 0
    _entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    _row_bounds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    _cache: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.lower)

    def variables(self, lower, upper, shape: tuple[int, ...] | None = None, integer: bool = False) -> np.ndarray:
        """New variables with the given (broadcast) bounds; returns their indices shaped like the bounds."""
        lower, upper = np.broadcast_arrays(np.asarray(lower, dtype=float), np.asarray(upper, dtype=float))
        if shape is not None:
            lower, upper = np.broadcast_to(lower, shape), np.broadcast_to(upper, shape)
        start = self.size
        self.lower = np.concatenate([self.lower, lower.ravel()])
        self.upper = np.concatenate([self.upper, upper.ravel()])
        self.integer = np.concatenate([self.integer, np.full(lower.size, integer)])
        self._cache.clear()
        return np.arange(start, start + lower.size).reshape(lower.shape)

    def free(self, shape: tuple[int, ...]) -> np.ndarray:
        """New unbounded variables of the given shape (the graph encoder bounds them afterwards)."""
        return self.variables(-INF, INF, tuple(shape))

    def constant(self, value: float) -> int:
        """A variable fixed to `value`."""
        return int(self.variables(value, value).reshape(-1)[0])

    def tighten(self, indices: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Intersect the bounds of variables `indices` with [lower, upper] (same shape)."""
        np.maximum.at(self.lower, indices.ravel(), np.broadcast_to(lower, indices.shape).ravel())
        np.minimum.at(self.upper, indices.ravel(), np.broadcast_to(upper, indices.shape).ravel())
        self._cache.clear()

    def add_rows(self, columns, coefficients, lower=-INF, upper=INF) -> None:
        """One row per leading index of `columns` [..., k]: lower <= sum_j coefficients[..., j] x[columns[..., j]]
        <= upper (coefficients, lower and upper broadcast)."""
        columns = np.asarray(columns)
        coefficients = np.broadcast_to(np.asarray(coefficients, dtype=float), columns.shape)
        lead, terms = columns.shape[:-1], columns.shape[-1]
        count = int(np.prod(lead))
        row_ids = np.repeat(np.arange(self.rows, self.rows + count), terms)
        values = coefficients.reshape(-1)
        keep = values != 0
        self._entries.append((row_ids[keep], columns.reshape(-1)[keep], values[keep]))
        self._row_bounds.append((np.broadcast_to(np.asarray(lower, dtype=float), lead).reshape(-1),
                                 np.broadcast_to(np.asarray(upper, dtype=float), lead).reshape(-1)))
        self.rows += count
        self._cache.clear()

    def equal(self, output: np.ndarray, columns, coefficients, constant=0.0) -> None:
        """Rows output = sum_j coefficients[..., j] x[columns[..., j]] + constant (output [...], columns [..., k])."""
        columns = np.asarray(columns)
        coefficients = np.broadcast_to(np.asarray(coefficients, dtype=float), columns.shape)
        self.add_rows(np.concatenate([output[..., None], columns], axis=-1),
                      np.concatenate([np.ones(output.shape + (1,)), -coefficients], axis=-1), constant, constant)

    def objective(self, indices: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
        """The cost vector of sum coefficients * x[indices] (indices may repeat)."""
        cost = np.zeros(self.size)
        np.add.at(cost, indices.ravel(), np.asarray(coefficients, dtype=float).ravel())
        return cost

    def matrix(self) -> tuple:
        """The rows as a scipy CSR matrix [rows, size] with their lower and upper bounds (cached)."""
        import scipy.sparse as sparse  # here, not at import: scipy costs start-up the bound methods never need

        if "matrix" not in self._cache:
            rows, columns, values = (np.concatenate([e[i] for e in self._entries] or [np.zeros(0)]) for i in range(3))
            matrix = sparse.coo_matrix((values, (rows.astype(np.int64), columns.astype(np.int64))),
                                       shape=(self.rows, self.size)).tocsr()
            lower, upper = (np.concatenate([b[i] for b in self._row_bounds] or [np.zeros(0)]) for i in range(2))
            self._cache["matrix"] = (matrix, lower, upper)
        return self._cache["matrix"]

    def minimize(self, cost: np.ndarray, solver: str = "dual-simplex") -> Solution:
        """Minimise cost . x over the LP (integrality ignored) by HiGHS (`solver` in LP_SOLVERS). `bound` is
        certified from the dual solution by weak duality: a lower bound whatever the solver's tolerances."""
        from scipy.optimize import linprog

        if solver not in LP_SOLVERS:
            raise ValueError(f"unknown LP solver {solver!r}: use one of {', '.join(LP_SOLVERS)}")
        a_ub, b_ub, a_eq, b_eq = self._inequality_form()
        result = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                         bounds=np.column_stack([self.lower, self.upper]), method=LP_SOLVERS[solver])
        if result.status == 2:
            return Solution("infeasible")
        if result.status != 0 or result.x is None:
            return Solution("failed")
        return Solution("optimal", float(result.fun), self._dual_bound(cost, result), result.x)

    def minimize_exact(self, cost: np.ndarray, time_limit: float | None = None, mip_rel_gap: float = 1e-6,
                       threads: int = 1) -> Solution:
        """Minimise cost . x over the MILP with HiGHS's branch and bound; `bound` is its dual bound."""
        from scipy.optimize import Bounds, LinearConstraint, milp

        if time_limit is not None and time_limit <= 0:
            return Solution("limit")
        matrix, lower, upper = self.matrix()
        options = {"mip_rel_gap": mip_rel_gap, "threads": threads, "presolve": True}
        if time_limit is not None:
            options["time_limit"] = float(time_limit)
        constraints = [LinearConstraint(matrix, lower, upper)] if self.rows else []
        with warnings.catch_warnings():  # scipy warns that it passes HiGHS-only options (threads) on verbatim
            warnings.simplefilter("ignore", RuntimeWarning)
            result = milp(cost, integrality=self.integer.astype(np.uint8), bounds=Bounds(self.lower, self.upper),
                          constraints=constraints, options=options)
        dual_bound = getattr(result, "mip_dual_bound", None)
        bound = -INF if dual_bound is None or not np.isfinite(dual_bound) else float(dual_bound)
        x = None if result.x is None else np.asarray(result.x)
        value = np.nan if x is None else float(cost @ x)
        if result.status == 0:
            return Solution("optimal", value, min(bound, value) if x is not None else bound, x)
        if result.status == 2:
            return Solution("infeasible", bound=INF)
        return Solution("limit" if result.status == 1 else "failed", value, bound, x)

    def _inequality_form(self) -> tuple:
        """A_ub x <= b_ub and A_eq x = b_eq, as linprog takes them (cached)."""
        import scipy.sparse as sparse

        if "inequality" not in self._cache:
            matrix, lower, upper = self.matrix()
            equal = lower == upper
            below, above = ~equal & np.isfinite(upper), ~equal & np.isfinite(lower)
            a_ub = sparse.vstack([matrix[below], -matrix[above]]).tocsr()
            b_ub = np.concatenate([upper[below], -lower[above]])
            a_eq, b_eq = matrix[equal], upper[equal]
            self._cache["inequality"] = (a_ub if a_ub.shape[0] else None, b_ub if a_ub.shape[0] else None,
                                         a_eq if a_eq.shape[0] else None, b_eq if a_eq.shape[0] else None)
        return self._cache["inequality"]

    def _dual_bound(self, cost: np.ndarray, result) -> float:
        """Weak duality with the solver's multipliers y: for every feasible x, cost . x >= y_eq . b_eq +
        y_ub . b_ub + sum_j min over [lower_j, upper_j] of r_j x_j, with r = cost - A^T y and y_ub <= 0."""
        a_ub, b_ub, a_eq, b_eq = self._inequality_form()
        reduced, bound = cost.copy(), 0.0
        if a_eq is not None:
            y_eq = np.asarray(result.eqlin.marginals)
            reduced -= a_eq.T @ y_eq
            bound += float(y_eq @ b_eq)
        if a_ub is not None:
            y_ub = np.minimum(np.asarray(result.ineqlin.marginals), 0.0)
            reduced -= a_ub.T @ y_ub
            bound += float(y_ub @ b_ub)
        with np.errstate(invalid="ignore"):
            terms = np.where(reduced > 0, reduced * self.lower, np.where(reduced < 0, reduced * self.upper, 0.0))
        return float(bound + terms.sum()) if np.isfinite(terms).all() else -INF


# ------------------------------------------------------------------ helpers for the layer rules

def sample(tensor: torch.Tensor) -> np.ndarray:
    """A batch-of-one tensor [1, *shape] as a float64 numpy array [*shape]."""
    return tensor[0].detach().to(device="cpu", dtype=F64).numpy()


def moved_indices(move, *inputs: np.ndarray) -> np.ndarray:
    """Variable indices moved by a pure data-movement function of torch tensors [N, *shape] (a reshape,
    transpose or slice): the function is applied to the indices themselves (exact below 2**53)."""
    tensors = [torch.from_numpy(np.ascontiguousarray(i, dtype=np.float64))[None] for i in inputs]
    return move(*tensors)[0].numpy().astype(np.int64)


def sliding_windows(index: np.ndarray, kernel, strides, dilations, begins, ends) -> np.ndarray:
    """The entries each output position of a convolution-like op reads: [..., *space] -> [..., *out, *kernel]
    over the last len(kernel) dims, padded positions -1 (the index pattern, as unfold would give it)."""
    spatial = len(kernel)
    pads = [(0, 0)] * (index.ndim - spatial) + list(zip(begins, ends))
    padded = np.pad(index, pads, constant_values=-1)
    extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    view = sliding_window_view(padded, extents, axis=tuple(range(index.ndim - spatial, index.ndim)))
    keep = (slice(None),) * (index.ndim - spatial)
    return view[keep + tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dilations)]


def onnx_pads(flat: tuple[int, ...] | None, spatial: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """F.pad's flat (last_begin, last_end, ...) back to ONNX (begins, ends) per spatial dim."""
    if flat is None:
        return (0,) * spatial, (0,) * spatial
    pairs = [(flat[2 * i], flat[2 * i + 1]) for i in range(spatial)][::-1]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def encode_lines(model: LPModel, z: np.ndarray, lower_slope, lower_intercept, upper_slope,
                 upper_intercept) -> np.ndarray:
    """y with lower_slope z + lower_intercept <= y <= upper_slope z + upper_intercept, per neuron."""
    y = model.free(z.shape)
    pair = np.stack([y, z], axis=-1)
    ones = np.ones(z.shape)
    model.add_rows(pair, np.stack([ones, -np.asarray(lower_slope)], axis=-1), lower=lower_intercept)
    model.add_rows(pair, np.stack([ones, -np.asarray(upper_slope)], axis=-1), upper=upper_intercept)
    return y


# ------------------------------------------------------------------ the graph

@dataclass
class Encoding:
    """An encoded graph: the model and the variable indices of every value (ONNX shapes)."""

    model: LPModel
    values: dict[str, np.ndarray]
    input_name: str

    @property
    def inputs(self) -> np.ndarray:
        """Flat indices of the network input's variables (VNN-LIB's X_i order)."""
        return self.values[self.input_name].reshape(-1)


def check_encodable(graph: Graph, method: str) -> None:
    """Fail before any work when some node's layer plugin has no `encode_lp`."""
    missing = [f"{n.op_type} (plugin {n.plugin or type(n.rule).__module__})" for n in graph.nodes
               if not n.rule.offers("encode_lp")]
    if missing:
        raise PluginError(f"method {method} needs `encode_lp` for op {', '.join(dict.fromkeys(missing))}",
                          fix="add encode_lp to the layer plugin, or use a back-substitution method (crown)")


def encode_region(model: LPModel, region: Region) -> np.ndarray:
    """Input variables [n] of a one-problem region: its bounding box, and for an L1 ball auxiliary
    t_i >= |x_i - c_i| with sum t <= radius. L2 balls need a conic solver and are refused."""
    box = region.bounding_box()
    x = model.variables(sample(box.lower), sample(box.upper))
    if isinstance(region, LpBall) and region.norm != INF:
        if region.norm != 1.0:
            raise VerikitError(f"LP/MILP encodings support Box and L-inf or L1 balls, not an L{region.norm:g} ball",
                               fix="use a bound method such as crown or alpha-crown for L2 regions")
        center, radius = sample(region.center), float(region.radius.reshape(-1)[0])
        t = model.variables(0.0, radius, x.shape)
        model.add_rows(np.stack([t, x], -1), [1.0, -1.0], lower=-center)
        model.add_rows(np.stack([t, x], -1), [1.0, 1.0], lower=center)
        model.add_rows(t[None], 1.0, upper=radius)
    return x


def encode_graph(graph: Graph, region: Region, bounds: dict[str, Interval], exact: bool = False,
                 until: str | None = None) -> Encoding:
    """Encode the graph (up to the value `until`) over a one-problem region. `bounds` (batch of 1) must hold
    every value's interval: nonlinear rules read their inputs', and every variable is boxed by its value's."""
    model = LPModel(exact)
    values = {graph.input_name: encode_region(model, region).reshape(graph.input_shape)}
    for node in graph.nodes:
        if until is not None and until in values:
            break
        if not node.rule.offers("encode_lp"):
            check_encodable(graph, "lp")
        output = node.rule.encode_lp(model, [values[name] for name in node.inputs],
                                     [bounds[name] for name in node.inputs])
        known = bounds.get(node.output)
        if known is not None:
            model.tighten(output, sample(known.lower), sample(known.upper))
        values[node.output] = output
    return Encoding(model, values, graph.input_name)


def select_problem(bounds: dict[str, Interval], index: int) -> dict[str, Interval]:
    """The bounds of problem `index` of a batch, as a batch of one (batch-of-one entries are shared)."""
    pick = lambda t: t[index:index + 1] if t.shape[0] > 1 else t  # noqa: E731
    return {name: Interval(pick(b.lower), pick(b.upper)) for name, b in bounds.items()}
