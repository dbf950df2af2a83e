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


class AlphaCrown(Method):
    name = "alpha-crown"
    kind = "bound"
    summary = "CROWN with ReLU lower slopes optimised by gradient ascent (Xu et al. 2021)"
    Options: ClassVar[type] = AlphaCrownOptions
    needs = ("forward", "interval", "backward", "relax")

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options=None,
              intermediate: dict[str, Interval] | None = None, deadline: float | None = None) -> Interval:
        """Bounds [B, K] of `coefficients @ output` over the region (see Method.bound); no step starts
        that would end after `deadline`."""
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
            bounds, best = tighten_intermediate(graph, region, rows, bounds, options, deadline=deadline)
        result = optimize_rows(graph, region, rows, bounds, options, deadline=deadline)
        crown = None  # piecewise-linear slopes start at CROWN's: the ascent's first step is CROWN's bound
        if any(not node.linear and not node.rule.kinks for node in graph.nodes):
            with torch.no_grad():  # other ops (S-shaped) may start from other lines: CROWN's rows as a floor
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
                  options: AlphaCrownOptions, sides: str = "both", deadline: float | None = None) -> Interval:
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
    lower = optimize_folded(graph, folded_region, folded_rows, folded_bounds, options,
                            deadline=deadline).reshape(batch, per_problem)
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
                    stop_at: torch.Tensor | None = None, target: str | None = None,
                    deadline: float | None = None) -> torch.Tensor:
    """Lower bounds [P] of `rows[p] . output` ([P, 1, *output_shape]) over problem p of the region, each
    with its own slopes; `record` receives backward_bound's coefficients (upper-bound form, for -rows)
    at each problem's best step; a problem leaves the ascent once its bound exceeds `stop_at` ([P]).

    `split_signs` (value -> [P, *shape] of +1 / -1 / 0) adds beta-CROWN's Lagrangian terms (Wang et al.
    2021): where the sign is s, s * value >= 0 holds on problem p's domain, so for any beta >= 0 the
    upper bound of -rows . output may add beta * s * value; the betas start at 0 and are optimised too.
    `target` names another value than the output for the rows to bound."""
    target = target or graph.output_name
    slopes = initial_slopes(graph, bounds)
    betas = {name: torch.zeros_like(sign, requires_grad=True) for name, sign in (split_signs or {}).items()}
    step_record: dict[str, torch.Tensor] | None = {} if record is not None else None
    sloped = {node.output: node for node in graph.nodes if node.output in slopes and node.rule.offers("reslope")}
    with torch.no_grad():  # the bounds stay fixed during the ascent: the slope-free lines are computed once
        bases = {name: node.rule.relax(bounds[node.inputs[0]], mode="adaptive") for name, node in sloped.items()}
    part = _select_open(None, region, rows, bounds, split_signs or {}, bases)  # the problems still ascending

    def objective(active: torch.Tensor | None) -> torch.Tensor:
        if part["active"] is not active:  # _ascend dropped some: select the others' inputs once
            part.update(_select_open(active, region, rows, bounds, split_signs or {}, bases))
        pick = part["pick"]
        step_slopes = {name: pick(slope) for name, slope in slopes.items()}
        relaxations = {name: sloped[name].rule.reslope(base, part["bounds"][sloped[name].inputs[0]], step_slopes[name])
                       for name, base in part["bases"].items()}
        extra = {name: (pick(beta) * part["signs"][name]).unsqueeze(1) for name, beta in betas.items()}
        found = backward_bound(graph, part["region"], target, part["rows"], part["bounds"], "optimizable",
                               sides="lower", lower_slopes=step_slopes, relaxations=relaxations,
                               record=step_record, extra=extra or None)
        return found.lower[:, 0]

    groups = [(list(slopes.values()), options.lr, 1.0), (list(betas.values()), options.lr_beta, float("inf"))]
    return _ascend(objective, groups, options, step_record, record, stop_at, deadline)


def tighten_intermediate(graph: Graph, region: Region, coefficients: torch.Tensor,
                         bounds: dict[str, Interval], options: AlphaCrownOptions,
                         known: dict[str, Interval] | None = None, skip_stable: bool = False,
                         deadline: float | None = None) -> tuple[dict[str, Interval], Interval]:
    """Optimise slopes shared per problem on the sum of both sides of every row, re-bounding every
    layer but the `known` ones at each step (with `skip_stable`, only their neurons that cross 0, as
    layer_bounds does); returns the tightest intermediate bounds met and the best row bounds."""
    slopes = initial_slopes(graph, bounds)
    best_bounds = dict(bounds)
    rows = coefficients.shape[1]
    coefficients = coefficients.reshape(coefficients.shape[0], rows, *graph.output_shape)

    def objective(active: None) -> torch.Tensor:  # every problem at every step (no early stop here)
        step_bounds = layer_bounds(graph, region, "optimizable", known or {},
                                   intersect_ibp=options.intersect_ibp, batch_rows=options.batch_rows,
                                   lower_slopes=slopes, reference=best_bounds, skip_stable=skip_stable)
        with torch.no_grad():
            best_bounds.update({k: Interval(v.lower.detach(), v.upper.detach()) for k, v in step_bounds.items()})
        found = backward_bound(graph, region, graph.output_name, coefficients, step_bounds, "optimizable",
                               lower_slopes=slopes)
        return torch.cat([found.lower, -found.upper], dim=1)

    best = _ascend(objective, [(list(slopes.values()), options.lr, 1.0)], options, deadline=deadline)
    return best_bounds, Interval(best[:, :rows], -best[:, rows:])


def tighten_each_neuron(graph: Graph, region: Region, bounds: dict[str, Interval],
                        options: AlphaCrownOptions, deadline: float | None = None) -> dict[str, Interval]:
    """Intermediate bounds of a one-problem region tightened neuron by neuron, layer by layer: each
    loose neuron's two sides get slopes (tangent positions) of their own, as alpha-CROWN gives each
    output row, and the later layers are re-bounded on the result, so the gain carries forward. Loose:
    crossing 0 where only ReLUs consume the value (the others are exact), any width elsewhere. Stops
    at `deadline` with what it has."""
    bounds = dict(bounds)
    relaxed = [name for name in values_to_relax(graph) if name in bounds]
    for position, name in enumerate(relaxed):
        bound = bounds[name]
        lower, upper = bound.lower.flatten(1)[0].clone(), bound.upper.flatten(1)[0].clone()
        loose = torch.zeros_like(lower, dtype=torch.bool)  # where some consumer's relaxation is loose
        for node in graph.nodes:
            if name in node.inputs:
                loose |= node.rule.unstable(Interval(lower, upper))
        unstable = loose.nonzero()[:, 0]
        upstream = sum(prod(graph.shapes[node.inputs[0]]) for node in upstream_in_reverse(graph, name)
                       if not node.linear and node.inputs[0] in graph.shapes)
        if not len(unstable) or not upstream:
            continue
        step = max(1, SLOPE_ENTRIES // (2 * upstream))  # neurons per pass: a memory cap
        for start in range(0, len(unstable), step):
            if deadline is not None and time.monotonic() >= deadline:
                return bounds  # what is tightened so far is sound; the rest keeps its bounds
            neurons = unstable[start:start + step]
            found_lower, found_upper = _tighten_neurons(graph, region, bounds, name, neurons, options, deadline)
            lower[neurons] = torch.maximum(lower[neurons], found_lower)
            upper[neurons] = torch.minimum(upper[neurons], found_upper)
        bounds[name] = Interval(lower.reshape(bound.lower.shape), upper.reshape(bound.upper.shape))
        known = {k: bounds[k] for k in relaxed[: position + 1]}
        with torch.no_grad():
            bounds.update(layer_bounds(graph, region, "adaptive", known, intersect_ibp=options.intersect_ibp,
                                       batch_rows=options.batch_rows, reference=bounds))
    return bounds


def _tighten_neurons(graph: Graph, region: Region, bounds: dict[str, Interval], name: str,
                     neurons: torch.Tensor, options: AlphaCrownOptions,
                     deadline: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of the given neurons of value `name`, each side with its own slopes."""
    count, size = len(neurons), prod(graph.shapes[name])
    rows = bounds[name].lower.new_zeros(2 * count, size)
    rows[torch.arange(count), neurons] = 1.0
    rows[count + torch.arange(count), neurons] = -1.0
    index = torch.zeros(2 * count, dtype=torch.long, device=rows.device)
    folded_region, folded_bounds = fold(graph, region, bounds, index)
    found = optimize_folded(graph, folded_region, rows.reshape(2 * count, 1, *graph.shapes[name]),
                            folded_bounds, options, target=name, deadline=deadline)
    return found[:count], -found[count:]


def initial_slopes(graph: Graph, bounds: dict[str, Interval]) -> dict[str, torch.Tensor]:
    """The optimisable parameters of every rule that offers them, as leaves, where each rule's
    `initial_parameters` puts them (a ReLU's lower slopes at CROWN's choice, an S-shaped op's
    tangent positions at the least-area lines)."""
    slopes = {}
    for node in graph.nodes:
        if node.inputs and node.inputs[0] in bounds and node.rule.offers("initial_parameters"):
            with torch.no_grad():
                slopes[node.output] = node.rule.initial_parameters(bounds[node.inputs[0]]).requires_grad_(True)
    return slopes


def _select_open(active: torch.Tensor | None, region: Region, rows: torch.Tensor, bounds: dict[str, Interval],
                 signs: dict[str, torch.Tensor], bases: dict) -> dict:
    """optimize_folded's inputs for problems `active` (None: all; batch-of-one entries are shared)."""
    pick = (lambda t: t) if active is None else (lambda t: t[active] if t.shape[0] > 1 else t)  # noqa: E731
    return dict(active=active, pick=pick, region=region if active is None else region.select(active),
                rows=pick(rows), bounds={name: _pick_all(b, pick) for name, b in bounds.items()},
                signs={name: pick(sign) for name, sign in signs.items()},
                bases={name: _pick_all(base, pick) for name, base in bases.items()})


def _pick_all(record, pick):
    """The same record (an Interval or a Relaxation-like dataclass) with `pick` applied to each tensor."""
    return type(record)(**{key: pick(value) if isinstance(value, torch.Tensor) else value
                           for key, value in vars(record).items()})


def _ascend(objective, groups: list[tuple[list[torch.Tensor], float, float]], options: AlphaCrownOptions,
            step_record: dict | None = None, record: dict | None = None,
            stop_at: torch.Tensor | None = None, deadline: float | None = None) -> torch.Tensor:
    """Adam ascent of objective(active) (the lower bounds of problems `active`, None: all) over groups of
    parameters (tensors, learning rate, upper limit; all projected into [0, limit]); returns the best
    value per entry (the first step uses the initial parameters). With `stop_at` (one per problem), a problem
    whose best exceeds it leaves the active set (the problems are independent: the others' steps are
    unchanged), and the ascent stops once none is left, or before a step that would end after `deadline`."""
    adams = [Adam(tensors, lr, maximize=True, limits=(0.0, limit)) for tensors, lr, limit in groups if tensors]
    parameters = [p for adam in adams for p in adam.parameters]
    best, active = None, None
    for step in range(max(1, options.steps)):
        started = time.monotonic()
        with torch.enable_grad():
            value = objective(active)
        detached = value.detach()
        if best is None:
            best, improved = detached.clone(), torch.ones_like(detached, dtype=torch.bool)
        else:
            improved = detached > (best if active is None else best[active])
            _put(best, active, torch.where(improved, detached, best if active is None else best[active]))
        if record is not None:
            _keep_improved(record, step_record, improved, active)
        done = False
        if stop_at is not None:
            still = (best if active is None else best[active]) <= (stop_at if active is None else stop_at[active])
            done = not bool(still.any())
            if 4 * int((~still).sum()) >= len(still):  # a quarter done: the step shrinks to the others
                every = torch.arange(len(best), device=best.device) if active is None else active
                active = every[still]
        now = time.monotonic()  # the next step would end about a step's time from now
        late = deadline is not None and 2 * now - started >= deadline
        if done or late or step == options.steps - 1 or not value.requires_grad:
            break
        gradients = iter(torch.autograd.grad(value.sum(), parameters, allow_unused=True))
        for adam in adams:
            adam.step([next(gradients) for _ in adam.parameters], options.lr_decay ** step)
    return best


def _put(target: torch.Tensor, active: torch.Tensor | None, value: torch.Tensor) -> None:
    """target[active] = value in place (active None: every entry)."""
    if active is None:
        target.copy_(value)
    else:
        target[active] = value


def _keep_improved(record: dict, step_record: dict, improved: torch.Tensor, active: torch.Tensor | None) -> None:
    """Copy the step's recorded coefficients (of problems `active`) into `record` where the bound improved."""
    for name, value in step_record.items():
        if value is None:
            continue
        value = value.detach()
        if name not in record:
            record[name] = value.clone()
        else:
            mask = improved.reshape(-1, *([1] * (value.dim() - 1)))
            kept = record[name] if active is None else record[name][active]
            _put(record[name], active, torch.where(mask, value, kept))
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
