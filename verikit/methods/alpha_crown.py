"""`alpha-crown`: CROWN with the ReLU lower slopes optimised by projected gradient ascent (Xu et al. 2021).

S-shaped activations (sigmoid, tanh, ...) are optimised the same way: their parameters are the points
where the upper and lower tangents touch f (verikit.layers.s_shaped), each as a position in [0, 1].

On an unstable ReLU (or LeakyReLU with leak a) every line through the origin with a slope in [a, 1] is a
valid lower line, so every choice of slopes gives a sound bound; alpha-CROWN searches for the slopes
that make the bound tightest. The slopes start at CROWN's adaptive choice, Adam raises the sum of the
lower bounds, each step projects them back into [0, 1] (the relaxation clamps them into [a, 1]), and
the best bound seen for each row is kept, and CROWN's with the same intermediate bounds too: the
result is never looser than that. (S-shaped ops start from their least-area lines, tighter than the
papers' on wide intervals, but not for every row.)

Each output row and side gets its own slopes (as auto_LiRPA keeps one alpha per spec row): the rows
are folded into the problem batch, B problems x R rows -> B*R problems of one row each. Intermediate
bounds come from CROWN and stay fixed while the rows are optimised; with `optimize_intermediate` a
first phase re-bounds every layer at each step with slopes shared per problem and keeps, per neuron,
the tightest bound met (each one is sound, so their intersection is too). `tighten_each_neuron` goes
further for branch and bound's root: every unstable intermediate neuron gets slopes of its own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from math import prod
from typing import ClassVar

import torch

from verikit.adam import Adam
from verikit.bounds import Interval
from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.methods.base import Method
from verikit.methods.linear_relaxation import DTYPES
from verikit.propagate.backward import (backward_bound, interval_of_rows, layer_bounds, region_device,
                                       upstream_in_reverse, values_to_relax)
from verikit.region import Region

SLOPED_OPS = ("Relu", "LeakyRelu")
SLOPE_ENTRIES = 1 << 23  # problems x slopes optimised at once by tighten_each_neuron: a memory cap


@dataclass
class AlphaCrownOptions:
    """Options of alpha-CROWN."""

    steps: int = 20  # gradient steps on the output rows' slopes
    lr: float = 0.5  # Adam learning rate
    lr_decay: float = 0.98  # learning rate factor per step
    lr_beta: float = 0.1  # Adam learning rate of beta-CROWN's split multipliers (branch and bound only)
    dtype: str = "float32"  # "float32" | "float64": precision of the whole computation
    optimize_intermediate: bool = True  # also tighten intermediate bounds (a first phase of `steps` steps)
    intermediate_limit: int = 20_000  # ... only when at most this many neurons feed activations
    intersect_ibp: bool = True  # intersect every bound with interval propagation (sound, tighter)
    batch_rows: int = 2048  # problems x coefficient rows per backward pass of the intermediate bounds
    deadline: float | None = None  # time.monotonic() after which no new step starts (every step is sound)


class AlphaCrown(Method):
    name = "alpha-crown"
    kind = "bound"
    summary = "CROWN with ReLU lower slopes optimised by gradient ascent (Xu et al. 2021)"
    Options: ClassVar[type] = AlphaCrownOptions
    needs = ("forward", "interval", "backward", "relax")

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options=None,
              intermediate: dict[str, Interval] | None = None) -> Interval:
        """Bounds [B, K] of `coefficients @ output` over the region (see Method.bound)."""
        options = options or self.default_options()
        if options.dtype not in DTYPES:
            raise ValueError(f"{self.name}: dtype {options.dtype!r} is not one of {', '.join(DTYPES)}")
        dtype, device = DTYPES[options.dtype], region_device(region)
        graph, region = graph.to(dtype, device), region.to(dtype, device)
        rows = coefficients.to(dtype=dtype, device=device)
        known = {name: Interval(b.lower.to(dtype=dtype, device=device), b.upper.to(dtype=dtype, device=device))
                 for name, b in (intermediate or {}).items()}
        with torch.no_grad():
            bounds = layer_bounds(graph, region, "adaptive", known, intersect_ibp=options.intersect_ibp,
                                  batch_rows=options.batch_rows)
        best = None
        if options.optimize_intermediate and _relaxed_neurons(graph) <= options.intermediate_limit:
            bounds, best = tighten_intermediate(graph, region, rows, bounds, options)
        result = optimize_rows(graph, region, rows, bounds, options)
        with torch.no_grad():  # CROWN's rows on the same bounds: S-shaped ops start from other lines
            shaped = rows.reshape(rows.shape[0], rows.shape[1], *graph.output_shape)
            crown = backward_bound(graph, region, graph.output_name, shaped, bounds, "adaptive")
        for other in (best, crown):
            if other is not None:
                result = Interval(torch.maximum(result.lower, other.lower), torch.minimum(result.upper, other.upper))
        if options.intersect_ibp and graph.output_name in bounds:
            result = result.intersect(interval_of_rows(rows, bounds[graph.output_name]))
        if intermediate is not None:
            intermediate.update({name: bounds[name] for name in values_to_relax(graph) if name in bounds})
        return result


def optimize_rows(graph: Graph, region: Region, coefficients: torch.Tensor, bounds: dict[str, Interval],
                  options: AlphaCrownOptions, sides: str = "both") -> Interval:
    """Bounds [B, K] of `coefficients @ output` ([B or 1, K, n_out]) with per-row slopes optimised and
    the intermediate `bounds` fixed; the unwanted side (`sides` "lower" / "upper") comes back infinite."""
    batch, rows = region.batch, coefficients.shape[1]
    signs = {"both": (1.0, -1.0), "lower": (1.0,), "upper": (-1.0,)}[sides]
    stacked = torch.cat([sign * coefficients for sign in signs], dim=1)  # lower bounds of each of these
    stacked = stacked.expand(batch, *stacked.shape[1:])
    per_problem = stacked.shape[1]
    index = torch.arange(batch, device=stacked.device).repeat_interleave(per_problem)
    folded_region, folded_bounds = fold(graph, region, bounds, index)
    folded_rows = stacked.reshape(batch * per_problem, 1, *graph.output_shape)
    lower = optimize_folded(graph, folded_region, folded_rows, folded_bounds, options).reshape(batch, per_problem)
    infinite = torch.full_like(lower[:, :rows], float("inf"))
    if sides == "lower":
        return Interval(lower, infinite)
    if sides == "upper":
        return Interval(-infinite, -lower)
    return Interval(lower[:, :rows], -lower[:, rows:])


def fold(graph: Graph, region: Region, bounds: dict[str, Interval], index: torch.Tensor,
         ) -> tuple[Region, dict[str, Interval]]:
    """Problems `index` of a batched region and of the bounds that relaxations need (one problem per row)."""
    batch = region.batch
    needed = [name for name in values_to_relax(graph) if name in bounds]
    return region.select(index), {name: _select(bounds[name], index, batch) for name in needed}


def optimize_folded(graph: Graph, region: Region, rows: torch.Tensor, bounds: dict[str, Interval],
                    options: AlphaCrownOptions, record: dict[str, torch.Tensor] | None = None,
                    split_signs: dict[str, torch.Tensor] | None = None,
                    stop_at: torch.Tensor | None = None, target: str | None = None) -> torch.Tensor:
    """Lower bounds [P] of `rows[p] . output` ([P, 1, *output_shape]) over problem p of the region, each
    with its own slopes; `record` receives backward_bound's coefficients (upper-bound form, for -rows)
    at each problem's best step; the ascent stops early once every bound exceeds `stop_at` ([P]).

    `split_signs` (value -> [P, *shape] of +1 / -1 / 0) adds beta-CROWN's Lagrangian terms (Wang et al.
    2021): where the sign is s, s * value >= 0 holds on problem p's domain, so for any beta >= 0 the
    upper bound of -rows . output may add beta * s * value; the betas start at 0 and are optimised too.
    `target` names another value than the output for the rows to bound."""
    target = target or graph.output_name
    slopes = initial_slopes(graph, bounds)
    betas = {name: torch.zeros_like(sign, requires_grad=True) for name, sign in (split_signs or {}).items()}
    step_record: dict[str, torch.Tensor] | None = {} if record is not None else None

    reslope = _slope_free_relaxations(graph, bounds, slopes)

    def objective() -> torch.Tensor:
        extra = {name: (beta * split_signs[name]).unsqueeze(1) for name, beta in betas.items()}
        found = backward_bound(graph, region, target, rows, bounds, "optimizable", sides="lower",
                               lower_slopes=slopes, relaxations=reslope(), record=step_record,
                               extra=extra or None)
        return found.lower[:, 0]

    groups = [(list(slopes.values()), options.lr, 1.0), (list(betas.values()), options.lr_beta, float("inf"))]
    return _ascend(objective, groups, options, step_record, record, stop_at)


def tighten_intermediate(graph: Graph, region: Region, coefficients: torch.Tensor,
                         bounds: dict[str, Interval], options: AlphaCrownOptions,
                         ) -> tuple[dict[str, Interval], Interval]:
    """Optimise slopes shared per problem on the sum of both sides of every row, re-bounding every
    layer at each step; returns the tightest intermediate bounds met and the best row bounds."""
    slopes = initial_slopes(graph, bounds)
    best_bounds = dict(bounds)
    rows = coefficients.shape[1]
    coefficients = coefficients.reshape(coefficients.shape[0], rows, *graph.output_shape)

    def objective() -> torch.Tensor:
        step_bounds = layer_bounds(graph, region, "optimizable", {}, intersect_ibp=options.intersect_ibp,
                                   batch_rows=options.batch_rows, lower_slopes=slopes, reference=best_bounds)
        with torch.no_grad():
            best_bounds.update({k: Interval(v.lower.detach(), v.upper.detach()) for k, v in step_bounds.items()})
        found = backward_bound(graph, region, graph.output_name, coefficients, step_bounds, "optimizable",
                               lower_slopes=slopes)
        return torch.cat([found.lower, -found.upper], dim=1)

    best = _ascend(objective, [(list(slopes.values()), options.lr, 1.0)], options)
    return best_bounds, Interval(best[:, :rows], -best[:, rows:])


def tighten_each_neuron(graph: Graph, region: Region, bounds: dict[str, Interval],
                        options: AlphaCrownOptions) -> dict[str, Interval]:
    """Intermediate bounds of a one-problem region tightened neuron by neuron, layer by layer: each
    loose neuron's two sides get slopes (tangent positions) of their own, as alpha-CROWN gives each
    output row, and the later layers are re-bounded on the result, so the gain carries forward. Loose:
    crossing 0 where only ReLUs consume the value (the others are exact), any width elsewhere. Stops
    at `options.deadline` with what it has."""
    bounds = dict(bounds)
    relaxed = [name for name in values_to_relax(graph) if name in bounds]
    for position, name in enumerate(relaxed):
        bound = bounds[name]
        lower, upper = bound.lower.flatten(1)[0].clone(), bound.upper.flatten(1)[0].clone()
        piecewise = all(node.op_type in SLOPED_OPS for node in graph.nodes if name in node.inputs)
        loose = ((lower < 0) & (upper > 0)) if piecewise else (upper - lower > 1e-9)
        unstable = loose.nonzero()[:, 0]
        upstream = sum(prod(graph.shapes[node.inputs[0]]) for node in upstream_in_reverse(graph, name)
                       if not node.linear and node.inputs[0] in graph.shapes)
        if not len(unstable) or not upstream:
            continue
        step = max(1, SLOPE_ENTRIES // (2 * upstream))  # neurons per pass: a memory cap
        for start in range(0, len(unstable), step):
            if options.deadline is not None and time.monotonic() >= options.deadline:
                return bounds  # what is tightened so far is sound; the rest keeps its bounds
            neurons = unstable[start:start + step]
            found_lower, found_upper = _tighten_neurons(graph, region, bounds, name, neurons, options)
            lower[neurons] = torch.maximum(lower[neurons], found_lower)
            upper[neurons] = torch.minimum(upper[neurons], found_upper)
        bounds[name] = Interval(lower.reshape(bound.lower.shape), upper.reshape(bound.upper.shape))
        known = {k: bounds[k] for k in relaxed[: position + 1]}
        with torch.no_grad():
            bounds.update(layer_bounds(graph, region, "adaptive", known, intersect_ibp=options.intersect_ibp,
                                       batch_rows=options.batch_rows, reference=bounds))
    return bounds


def _tighten_neurons(graph: Graph, region: Region, bounds: dict[str, Interval], name: str,
                     neurons: torch.Tensor, options: AlphaCrownOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of the given neurons of value `name`, each side with its own slopes."""
    count, size = len(neurons), prod(graph.shapes[name])
    rows = bounds[name].lower.new_zeros(2 * count, size)
    rows[torch.arange(count), neurons] = 1.0
    rows[count + torch.arange(count), neurons] = -1.0
    index = torch.zeros(2 * count, dtype=torch.long, device=rows.device)
    folded_region, folded_bounds = fold(graph, region, bounds, index)
    found = optimize_folded(graph, folded_region, rows.reshape(2 * count, 1, *graph.shapes[name]),
                            folded_bounds, options, target=name)
    return found[:count], -found[count:]


def initial_slopes(graph: Graph, bounds: dict[str, Interval]) -> dict[str, torch.Tensor]:
    """The optimisable parameters, as leaves, at CROWN's adaptive choice: a ReLU / LeakyReLU's lower
    slopes (1 where u >= -l, else 0), an S-shaped op's tangent positions (its `least_area_positions`)."""
    slopes = {}
    for node in graph.nodes:
        if not node.inputs or node.inputs[0] not in bounds:
            continue
        bound = bounds[node.inputs[0]]
        if node.op_type in SLOPED_OPS:
            slopes[node.output] = (bound.upper >= -bound.lower).to(bound.lower.dtype).requires_grad_(True)
        elif hasattr(node.rule, "least_area_positions"):
            with torch.no_grad():
                slopes[node.output] = node.rule.least_area_positions(bound).requires_grad_(True)
    return slopes


def _slope_free_relaxations(graph: Graph, bounds: dict[str, Interval], slopes: dict[str, torch.Tensor]):
    """A function giving, at each step, the relaxations of the nodes whose rules can `reslope`: their
    slope-free lines are computed once (the bounds stay fixed during an ascent), the slopes each call."""
    bases = {}
    with torch.no_grad():
        for node in graph.nodes:
            if node.output in slopes and hasattr(node.rule, "reslope"):
                bound = bounds[node.inputs[0]]
                bases[node.output] = (node.rule, node.rule.relax(bound, mode="adaptive"), bound)
    return lambda: {name: rule.reslope(base, bound, slopes[name]) for name, (rule, base, bound) in bases.items()}


def _ascend(objective, groups: list[tuple[list[torch.Tensor], float, float]], options: AlphaCrownOptions,
            step_record: dict | None = None, record: dict | None = None,
            stop_at: torch.Tensor | None = None) -> torch.Tensor:
    """Adam ascent of objective() (a vector of lower bounds) over groups of parameters (tensors,
    learning rate, upper limit; all projected into [0, limit]); returns the best value per entry
    (the first step uses the initial parameters)."""
    adams = [Adam(tensors, lr, maximize=True, limits=(0.0, limit)) for tensors, lr, limit in groups if tensors]
    parameters = [p for adam in adams for p in adam.parameters]
    best = None
    for step in range(max(1, options.steps)):
        with torch.enable_grad():
            value = objective()
        detached = value.detach()
        improved = torch.ones_like(detached, dtype=torch.bool) if best is None else detached > best
        best = detached.clone() if best is None else torch.where(improved, detached, best)
        if record is not None:
            _keep_improved(record, step_record, improved)
        done = stop_at is not None and bool((best > stop_at).all())
        late = options.deadline is not None and time.monotonic() >= options.deadline
        if done or late or step == options.steps - 1 or not value.requires_grad:
            break
        gradients = iter(torch.autograd.grad(value.sum(), parameters, allow_unused=True))
        for adam in adams:
            adam.step([next(gradients) for _ in adam.parameters], options.lr_decay ** step)
    return best


def _keep_improved(record: dict, step_record: dict, improved: torch.Tensor) -> None:
    """Copy the step's recorded coefficients into `record` for the problems whose bound improved."""
    for name, value in step_record.items():
        if value is None:
            continue
        value = value.detach()
        if name not in record:
            record[name] = value.clone()
        else:
            mask = improved.reshape(-1, *([1] * (value.dim() - 1)))
            record[name] = torch.where(mask, value, record[name])
    step_record.clear()


def _relaxed_neurons(graph: Graph) -> int:
    """How many neurons feed nonlinear nodes (each costs one backward row per tightening step)."""
    return sum(prod(graph.shapes[name]) for name in values_to_relax(graph) if name in graph.shapes)


def _select(bound: Interval, index: torch.Tensor, batch: int) -> Interval:
    """Rows `index` of a bound whose batch is `batch` (or 1, broadcast)."""
    lower, upper = (t.expand(batch, *t.shape[1:]) for t in (bound.lower, bound.upper))
    return Interval(lower[index], upper[index])


@hookimpl
def verikit_methods(register) -> None:
    register(AlphaCrown())
