"""`milp`: exact mixed-integer encoding of piecewise-linear networks (Tjeng et al. 2019), solved by HiGHS.

Linear layers are equality rows; every unstable ReLU / LeakyReLU gets one binary (big-M constants from
CROWN's intermediate bounds, intersected with interval propagation); max pooling gets one binary per
window entry that can be the max. S-shaped activations have no exact encoding and are refused.

`decide`: for each region and each clause of its unsafe condition, one MILP asks whether some input of
the region (and of its linear input constraints) gives an output meeting every row c . y <= d. A
feasible point is a counterexample (the pipeline re-checks it with onnxruntime); every clause
infeasible is `unsat`; a time limit reached without a point leaves the clause open: unknown / timeout,
never a guess. `bound`: the exact min / max of each row (HiGHS's dual bound, equal to the optimum up to
`mip_rel_gap`, and a sound bound even when a time limit stops the search).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from verikit.bounds import Interval
from verikit.errors import VerikitError
from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.lp.encode import F64, Encoding, Solution, check_encodable, encode_graph, select_problem
from verikit.methods.lp import encoding_bounds
from verikit.methods.base import Method, Verdict
from verikit.region import Region
from verikit.spec.property import OutputClause, Property, RegionSpec

ROBUST_MARGIN = 1e-5  # a counterexample closer than this (times 1 + |d|) to a row's boundary is re-sought inside


@dataclass
class MILPOptions:
    """Options of the MILP method."""

    time_limit: float | None = None  # seconds per MILP solve (None: until the deadline, if any)
    mip_rel_gap: float = 1e-6  # relative optimality gap at which `bound` stops optimising
    threads: int = 1  # HiGHS threads


@dataclass
class Optimum:
    """The minimum of a row over a region: `value` at the flat input `x` (None when no point was found),
    and `bound`, a proven lower bound of the minimum (equal to value up to the gap when `optimal`)."""

    status: str  # "optimal" | "infeasible" | "limit" | "failed"
    value: float
    bound: float
    x: torch.Tensor | None


class MILP(Method):
    name = "milp"
    kind = "complete"
    summary = "exact MILP encoding (big-M from crown bounds) solved by HiGHS (Tjeng et al. 2019)"
    Options = MILPOptions
    needs = ("forward", "interval", "backward", "relax", "encode_lp", "exact_encoding")

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options: MILPOptions | None = None,
              intermediate: dict[str, Interval] | None = None, deadline: float | None = None) -> Interval:
        """Exact bounds [B, K] of `coefficients @ output` (CROWN's where a solve fails)."""
        options = options or self.default_options()
        check_encodable(graph, self.name)
        graph, region = graph.to(F64), region.to(F64)
        coefficients = coefficients.to(F64).expand(region.batch, *coefficients.shape[1:])
        with torch.no_grad():
            fallback, bounds = encoding_bounds(graph, region, coefficients, "adaptive", intermediate)
        lower, upper = fallback.lower.clone(), fallback.upper.clone()
        for index in range(region.batch):
            encoding = encode_graph(graph, region.select(slice(index, index + 1)), select_problem(bounds, index), True)
            for row in range(coefficients.shape[1]):
                low = _minimize(encoding, graph, coefficients[index, row], options)
                high = _minimize(encoding, graph, -coefficients[index, row], options)
                lower[index, row] = max(float(lower[index, row]), low.bound)
                upper[index, row] = min(float(upper[index, row]), -high.bound)
        return Interval(lower, upper)

    def minimize(self, graph: Graph, region: Region, row: torch.Tensor, options: MILPOptions | None = None,
                 deadline: float | None = None) -> Optimum:
        """The exact minimum of row . output ([n_out]) over a one-problem region, with its argmin."""
        graph, region = graph.to(F64), region.to(F64)
        encoding = exact_encoding(graph, region)
        return _minimize(encoding, graph, row.to(F64), options or self.default_options(), deadline)

    def decide(self, graph: Graph, prop: Property, options: MILPOptions | None = None,
               deadline: float | None = None, device: str | None = None, workers: int | None = None) -> Verdict:
        """sat with a counterexample, unsat when every clause's MILP is infeasible, else unknown / timeout."""
        options = options or self.default_options()
        check_encodable(graph, self.name)
        graph = graph.to(F64)
        open_clauses, reasons = 0, []
        for spec in prop.regions:
            try:
                encoding = exact_encoding(graph, spec.region.to(F64))
            except VerikitError as error:
                open_clauses, reasons = open_clauses + len(spec.clauses), reasons + [error.detail]
                continue
            for clause in spec.clauses:
                found = find_point(encoding, graph, spec, clause, options, deadline)
                if isinstance(found, Verdict):
                    return found
                open_clauses += found == "open"
        if open_clauses:
            late = deadline is not None and time.monotonic() >= deadline
            why = f": {'; '.join(dict.fromkeys(reasons))}" if reasons else ""
            detail = f"{open_clauses} clause(s) undecided{why}"
            return Verdict("timeout" if late else "unknown", method=self.name, detail=detail)
        return Verdict("unsat", method=self.name)


def exact_encoding(graph: Graph, region: Region) -> Encoding:
    """The MILP of a float64 graph over a one-problem region, big-M constants from CROWN's bounds."""
    with torch.no_grad():
        _, bounds = encoding_bounds(graph, region, torch.zeros(1, 1, graph.output_size, dtype=F64), "adaptive")
    return encode_graph(graph, region, bounds, exact=True)


def find_point(encoding: Encoding, graph: Graph, spec: RegionSpec, clause: OutputClause, options: MILPOptions,
               deadline: float | None) -> Verdict | str:
    """A sat Verdict for a point of the region meeting the clause, "infeasible" when none exists, "open"
    when the solver stopped first. A point on a row's boundary is re-sought ROBUST_MARGIN inside it."""
    rhs = clause.rhs.to(F64).numpy()
    solution = _solve_clause(encoding, graph, spec, clause, rhs, options, deadline)
    if solution.x is None:
        return "infeasible" if solution.status == "infeasible" else "open"
    x, y = _point(encoding, graph, spec.region, solution.x)
    margin = ROBUST_MARGIN * (1 + np.abs(rhs))
    if float(clause.slack(y).max()) > -float(margin.min()):
        inner = _solve_clause(encoding, graph, spec, clause, rhs - margin, options, deadline)
        if inner.x is not None:
            x, y = _point(encoding, graph, spec.region, inner.x)
    return Verdict("sat", method="milp", counterexample=(x, y))


def _solve_clause(encoding: Encoding, graph: Graph, spec: RegionSpec, clause: OutputClause, rhs: np.ndarray,
                  options: MILPOptions, deadline: float | None) -> Solution:
    """Feasibility of the clause rows (right-hand sides `rhs`) and the input constraints over the encoding."""
    model = copy.deepcopy(encoding.model)
    outputs = encoding.values[graph.output_name].reshape(-1)
    rows = clause.coefficients.to(F64).numpy()
    model.add_rows(np.broadcast_to(outputs, rows.shape), rows, upper=rhs)
    if spec.input_constraints is not None:
        constraints = spec.input_constraints.coefficients.to(F64).numpy()
        model.add_rows(np.broadcast_to(encoding.inputs, constraints.shape), constraints,
                       upper=spec.input_constraints.rhs.to(F64).numpy())
    return model.minimize_exact(np.zeros(model.size), _time_left(options, deadline), options.mip_rel_gap,
                                options.threads)


def _minimize(encoding: Encoding, graph: Graph, row: torch.Tensor, options: MILPOptions,
              deadline: float | None = None) -> Optimum:
    """Minimise row . output over the encoding's MILP."""
    indices = encoding.values[graph.output_name]
    cost = encoding.model.objective(indices, row.detach().to(F64).reshape(indices.shape).numpy())
    solution = encoding.model.minimize_exact(cost, _time_left(options, deadline), options.mip_rel_gap, options.threads)
    x = None if solution.x is None else torch.from_numpy(solution.x[encoding.inputs])
    return Optimum(solution.status, solution.value, solution.bound, x)


def _point(encoding: Encoding, graph: Graph, region: Region, solution: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat input of a MILP solution, projected into the region (solver tolerance), and its output."""
    x = torch.from_numpy(solution[encoding.inputs])[None, None]
    x = region.to(F64).project(x)[0]
    with torch.no_grad():
        return x[0], graph.forward_flat(x)[0]


def _time_left(options: MILPOptions, deadline: float | None) -> float | None:
    """Seconds the next solve may take: the option's limit, cut at the deadline."""
    limits = [options.time_limit] if options.time_limit is not None else []
    if deadline is not None:
        limits.append(deadline - time.monotonic())
    return min(limits) if limits else None


@hookimpl
def verikit_methods(register) -> None:
    register(MILP())
