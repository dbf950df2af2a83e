"""`dual-lp` and `lp-full`: the triangle-relaxation LP of CNN-Cert's LP baseline (seed-papers 3.3, 3.4).

The network is encoded as an LP (verikit.lp.encode): every value a vector of variables boxed by its
intermediate bounds, linear layers as equality rows, ReLUs by the triangle (y >= 0, y >= z, y <= chord),
S-shaped activations and max pooling by their relaxation lines. Each bound of each row c . y is one LP,
solved by HiGHS's dual simplex; the reported bound is certified from the dual solution (weak duality),
so it is sound even where the solver's own optimum is off by its tolerances.

`dual-lp` takes the intermediate bounds from `fast-lin` (then the LP is never looser than fast-lin:
every relaxation fast-lin uses contains the triangle). `lp-full` also re-bounds, in topological order,
every neuron whose relaxation is not exact by two LPs (its min and max) over the network up to it,
before the next layer is encoded: tighter, and far slower. On piecewise-linear networks lp-full is never
looser than dual-lp (the triangle shrinks with its bounds); tangent/chord and max-pool window lines are
not nested in their bounds, so with those a row can come out marginally looser.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from verikit import deadline as instance_deadline
from verikit.bounds import Interval, Relaxation
from verikit.graph import Graph, Node
from verikit.hookspecs import hookimpl
from verikit.lp.encode import F64, LP_SOLVERS, Encoding, check_encodable, encode_graph, sample, select_problem
from verikit.methods.base import Method
from verikit.propagate.backward import SIDES, compute_bounds, layer_bounds
from verikit.region import Region


def encoding_bounds(graph: Graph, region: Region, coefficients: torch.Tensor, mode: str,
                    intermediate: dict[str, Interval] | None = None) -> tuple[Interval, dict[str, Interval]]:
    """Back-substitution bounds (relaxation `mode`, float64, intersected with interval propagation) of the
    rows and of every value of the graph, which box an LP / MILP encoding's variables. Pre-filled
    `intermediate` entries are used as given; the bounds of the values feeding nonlinear nodes are
    written back into it."""
    known = {} if intermediate is None else intermediate
    rows = compute_bounds(graph, region, coefficients, mode, F64, known, intersect_ibp=True)
    every = layer_bounds(graph.to(F64), region.to(F64), mode, dict(known), intersect_ibp=True)
    return rows, every


@dataclass
class LPOptions:
    """Options of the LP methods."""

    sides: str = "both"  # "both" | "lower" | "upper": which bound of each row to solve for (the other is inf)
    solver: str = "dual-simplex"  # HiGHS's "dual-simplex" (CNN-Cert's baseline), "ipm" (often far faster), "auto"


class DualLP(Method):
    """Triangle LP per row and side, intermediate bounds from fast-lin (`full`: re-bounded by LP)."""

    name = "dual-lp"
    kind = "bound"
    summary = "triangle-relaxation LP by HiGHS dual simplex, fast-lin intermediate bounds (CNN-Cert's LP)"
    Options = LPOptions
    needs = ("forward", "interval", "backward", "relax", "encode_lp")
    full: ClassVar[bool] = False

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options: LPOptions | None = None,
              intermediate: dict[str, Interval] | None = None, deadline: float | None = None) -> Interval:
        """Bounds [B, K] of `coefficients @ output` over the region; `intermediate` as in compute_bounds
        (pre-filled entries are used as given; lp-full writes its LP bounds back into it). Rows reached
        after `deadline` keep the same-slope back-substitution bound."""
        options = options or self.default_options()
        if options.sides not in SIDES or options.solver not in LP_SOLVERS:
            raise ValueError(f"{self.name}: sides {options.sides!r} / solver {options.solver!r} not in "
                             f"{', '.join(SIDES)} / {', '.join(LP_SOLVERS)}")
        check_encodable(graph, self.name)
        graph, region = graph.to(F64), region.to(F64)
        coefficients = coefficients.to(F64).expand(region.batch, *coefficients.shape[1:])
        with torch.no_grad():
            fallback, bounds = encoding_bounds(graph, region, coefficients, "same-slope", intermediate)
        lower = torch.full(fallback.lower.shape, -np.inf, dtype=F64)
        upper = torch.full(fallback.upper.shape, np.inf, dtype=F64)
        for index in range(region.batch):
            problem, values = region.select(slice(index, index + 1)), select_problem(bounds, index)
            if self.full:
                values = tighten_by_lp(graph, problem, values, options.solver)
                _write_back(intermediate, values, index, region.batch)
            encoding = encode_graph(graph, problem, values)
            for row in range(coefficients.shape[1]):
                instance_deadline.check()
                late = deadline is not None and time.monotonic() >= deadline
                row_lower, row_upper = (-np.inf, np.inf) if late else bound_row(
                    encoding, graph.output_name, coefficients[index, row], options)
                lower[index, row] = row_lower if np.isfinite(row_lower) else fallback.lower[index, row]
                upper[index, row] = row_upper if np.isfinite(row_upper) else fallback.upper[index, row]
        return _keep_sides(Interval(lower, upper), options.sides)


class LPFull(DualLP):
    name = "lp-full"
    summary = "triangle LP with every layer's bounds re-computed by LP (CNN-Cert's LPFULL baseline)"
    full = True


def bound_row(encoding: Encoding, value: str, row: torch.Tensor, options: LPOptions) -> tuple[float, float]:
    """Certified (min, max) of row . value over the encoding's LP; -inf / inf where not solved."""
    indices = encoding.values[value]
    coefficients = row.detach().to(dtype=F64).reshape(indices.shape).numpy()
    cost, model = encoding.model.objective(indices, coefficients), encoding.model
    low = model.minimize(cost, options.solver).bound if options.sides in ("both", "lower") else -np.inf
    high = -model.minimize(-cost, options.solver).bound if options.sides in ("both", "upper") else np.inf
    return low, high


def tighten_by_lp(graph: Graph, region: Region, bounds: dict[str, Interval],
                  solver: str = "dual-simplex") -> dict[str, Interval]:
    """LPFULL: in topological order, each value feeding a nonlinear node gets, for every neuron whose
    relaxation is not exact, its min and max by LP over the graph up to it (intersected with the old
    bound); the nonlinear node's output takes the interval image of the new bound."""
    bounds = dict(bounds)
    for node in graph.nodes:
        if node.linear:
            continue
        for value in node.inputs:
            if value == graph.input_name:
                continue
            encoding = encode_graph(graph, region, bounds, until=value)
            bounds[value] = _rebound(encoding, value, bounds[value], _loose(node, bounds[value]), solver)
        image = node.rule.interval(*(bounds[name] for name in node.inputs))
        bounds[node.output] = image.intersect(bounds[node.output]) if node.output in bounds else image
    return bounds


def _loose(node: Node, bound: Interval) -> np.ndarray:
    """Neurons of a nonlinear node's input whose relaxation is not exact (all, for window relaxations)."""
    relaxation = node.rule.relax(bound, mode="adaptive")
    if not isinstance(relaxation, Relaxation):
        return np.ones(bound.lower.shape[1:], dtype=bool)
    same_slope = relaxation.lower_slope == relaxation.upper_slope
    return ~(same_slope & (relaxation.lower_intercept == relaxation.upper_intercept))[0].numpy()


def _rebound(encoding: Encoding, value: str, bound: Interval, which: np.ndarray, solver: str) -> Interval:
    """The bound with the neurons `which` re-bounded by two LPs each."""
    lower, upper = sample(bound.lower).copy(), sample(bound.upper).copy()
    flat_lower, flat_upper = lower.reshape(-1), upper.reshape(-1)
    indices = encoding.values[value].reshape(-1)
    for neuron in np.flatnonzero(which.reshape(-1)):
        cost = encoding.model.objective(indices[neuron:neuron + 1], np.ones(1))
        flat_lower[neuron] = max(flat_lower[neuron], encoding.model.minimize(cost, solver).bound)
        flat_upper[neuron] = min(flat_upper[neuron], -encoding.model.minimize(-cost, solver).bound)
    return Interval(torch.from_numpy(lower)[None], torch.from_numpy(upper)[None])


def _write_back(intermediate: dict[str, Interval] | None, values: dict[str, Interval], index: int,
                batch: int) -> None:
    """Store problem `index`'s LP-tightened bounds into the caller's intermediate dict (new tensors)."""
    if intermediate is None:
        return
    for name, known in list(intermediate.items()):
        if name in values and known.lower.shape[0] == batch:
            lower, upper = known.lower.clone(), known.upper.clone()
            lower[index:index + 1], upper[index:index + 1] = values[name].lower, values[name].upper
            intermediate[name] = Interval(lower, upper)


def _keep_sides(result: Interval, sides: str) -> Interval:
    """Replace the side not asked for by -inf / inf (it holds fast-lin's fallback otherwise)."""
    if sides == "lower":
        return Interval(result.lower, torch.full_like(result.upper, np.inf))
    if sides == "upper":
        return Interval(torch.full_like(result.lower, -np.inf), result.upper)
    return result


@hookimpl
def verikit_methods(register) -> None:
    register(DualLP())
    register(LPFull())
