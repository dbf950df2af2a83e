"""Where ReLU splitting (relu_split.py) looks for counterexamples and settles its leaves: the points
minimising each open row's linear bound and PGD steps from the most promising of them, and, for a
domain with every ReLU decided, one LP per open clause (exact there for piecewise-linear nets)."""
from __future__ import annotations

import copy

import numpy as np
import torch

from verikit.bounds import Interval
from verikit.errors import VerikitError
from verikit.graph import Graph
from verikit.lp.encode import encode_graph
from verikit.propagate.backward import layer_bounds
from verikit.region import Box, Region
from verikit.spec.property import RegionSpec


def solve_leaf(graph64: Graph, spec: RegionSpec, bounds: dict[str, Interval], open_clauses: torch.Tensor,
               ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A domain with every ReLU decided (`bounds`: its own, one problem): with its bounds boxing every
    value, the LP encoding is exact for piecewise-linear nets (and a sound relaxation otherwise), so
    one LP per open clause refutes it (infeasible) or gives a candidate point. The bounds, computed in
    float32, are widened by their rounding first, or a pinned input's neurons could exclude their own
    float64 values and make the LP falsely infeasible. Returns the clauses
    left open and the candidates (x, y); regions or ops the LP cannot encode leave the domain open."""
    try:
        region = spec.region.to(torch.float64)
        known = {k: v.to(torch.float64).widened() for k, v in bounds.items()}  # computed in float32
        with torch.no_grad():  # every other value: the interval image of these
            boxes = layer_bounds(graph64, region, "adaptive", known)
        encoding = encode_graph(graph64, region, boxes)
    except VerikitError:
        return open_clauses, []
    outputs = encoding.values[graph64.output_name].reshape(-1)
    still_open, candidates = open_clauses.clone(), []
    for clause_index in open_clauses.nonzero()[:, 0].tolist():
        clause, model = spec.clauses[clause_index], copy.deepcopy(encoding.model)
        coefficients = clause.coefficients.double().numpy()
        rhs = clause.rhs.double().numpy()
        model.add_rows(np.broadcast_to(outputs, coefficients.shape), coefficients, upper=rhs)
        constraints = spec.input_constraints
        if constraints is not None:
            a = constraints.coefficients.double().numpy()
            b = constraints.rhs.double().numpy()
            model.add_rows(np.broadcast_to(encoding.inputs, a.shape), a, upper=b)
        solution = model.minimize(model.objective(outputs, coefficients[0]))
        if solution.status == "infeasible":
            still_open[clause_index] = False
        elif solution.x is not None:
            x = torch.from_numpy(solution.x[encoding.inputs])  # projected: the LP's tolerances
            x = spec.region.to(torch.float64).project(x.reshape(1, 1, -1))[0, 0]
            with torch.no_grad():
                candidates.append((x, graph64.forward_flat(x[None])[0]))
    return still_open, candidates


def attack(graph64: Graph, spec: RegionSpec, input_coefficients: torch.Tensor | None, margin: torch.Tensor,
           live: torch.Tensor, starts: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The points minimising each live (domain, row) pair's linear bound (`input_coefficients`, the
    backward coefficients on the input), then PGD from the `starts` of lowest margin; returns the best
    violating (x, y), if any, in a list."""
    if input_coefficients is None or not bool(live.any()):
        return []
    input_coefficients, margin, live = input_coefficients.cpu(), margin.cpu(), live.cpu()
    points = _maximiser(spec.region, input_coefficients.flatten(1)[live].double())
    worst = margin[live].argsort()[: starts]
    points = torch.cat([points, _descend(graph64, spec, points[worst])])
    with torch.no_grad():
        outputs = graph64.forward_flat(points)
        violation = spec.violation(points, outputs)
    best = int(violation.argmin())
    return [(points[best], outputs[best])] if float(violation[best]) <= 0 else []


def _maximiser(region: Region, coefficients: torch.Tensor) -> torch.Tensor:
    """Per row p, a point of the (one-problem) region maximising coefficients[p] . x ([P, n] -> [P, n])."""
    region = region.to(torch.float64)
    if isinstance(region, Box):
        return torch.where(coefficients > 0, region.upper, region.lower)
    radius = region.radius.reshape(-1, 1)
    if region.norm == float("inf"):
        step = coefficients.sign()
    elif region.norm == 2.0:
        step = coefficients / coefficients.norm(dim=1, keepdim=True).clamp_min(1e-30)
    else:
        largest = coefficients.abs().argmax(1, keepdim=True)
        step = torch.zeros_like(coefficients).scatter_(1, largest, coefficients.gather(1, largest).sign())
    return region.project((region.center + radius * step).unsqueeze(0))[0]


def _descend(graph64: Graph, spec: RegionSpec, starts: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """A few signed-gradient steps from `starts` ([M, n]) down the spec's violation, kept in the region."""
    region = spec.region.to(torch.float64)
    box = region.bounding_box()
    width = (box.upper - box.lower).reshape(1, -1)
    x = starts.detach().clone()
    for step in range(steps):
        with torch.enable_grad():
            x.requires_grad_(True)
            violation = spec.violation(x, graph64.forward_flat(x))
            (gradient,) = torch.autograd.grad(violation.sum(), x)
        size = 0.2 * (1 - step / steps) + 0.01  # a fraction of the box width, decaying
        with torch.no_grad():
            x = region.project((x - size * width * gradient.sign()).unsqueeze(0))[0]
    return x.detach()
