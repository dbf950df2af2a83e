"""Generic back-substitution over the graph with dense coefficients (Fast-Lin / CROWN, CNN-Cert 1.2, 1.8).

`backward_bound` pushes linear coefficients on one value back to the network input, node by node in
reverse topological order, replacing each nonlinearity by its linear relaxation; `compute_bounds` runs
it layer by layer: first the bounds of every value that feeds a nonlinearity (they define the
relaxations), then the requested output rows. Bounds live in plain dicts, never on the graph.
"""
from __future__ import annotations

from functools import partial
from math import prod
from typing import Callable

import torch

from verikit import deadline
from verikit.bounds import Interval, LinearBound, Relaxation
from verikit.graph import Graph, Node
from verikit.layers.base import RELAXATION_MODES
from verikit.region import Box, LpBall, Region

SIDES = ("both", "lower", "upper")
GATHERED_ENTRIES = 1 << 25  # relaxation entries gathered per chunk of (problem, neuron) pairs: a memory cap


def backward_bound(graph: Graph, region: Region, target: str, coefficients: torch.Tensor,
                   bounds: dict[str, Interval], mode: str, *, sides: str = "both",
                   lower_slopes: dict[str, torch.Tensor] | None = None,
                   relaxations: dict[str, Relaxation] | None = None,
                   record: dict[str, torch.Tensor] | None = None,
                   extra: dict[str, torch.Tensor] | None = None) -> Interval:
    """Bounds [B, K] of `coefficients . target` ([B or 1, K, *target_shape]) over the region.

    `bounds` must hold the interval of every input of a nonlinear node upstream of `target`.
    `sides` skips the unwanted side where that saves work (it comes back as -inf / +inf);
    `lower_slopes` (output value of a nonlinear node -> tensor) feeds mode "optimizable";
    `relaxations` (same keys) is a cache, reused and filled, valid as long as `bounds` does not change.
    `record`, when given, receives the coefficients reaching each nonlinear node's output and the graph
    input, in upper-bound form ([B, rows, *shape]; rows stacked as `sides` stacks them, [A; -A] for "both").
    `extra` (value -> tensor broadcastable to those coefficients) is added to the coefficients on a value
    when the pass reaches it: beta-CROWN's split multipliers, whose sign the caller makes sound.
    """
    if mode not in RELAXATION_MODES:
        raise ValueError(f"unknown relaxation mode {mode!r}: use one of {', '.join(RELAXATION_MODES)}")
    if sides not in SIDES:
        raise ValueError(f"unknown sides {sides!r}: use one of {', '.join(SIDES)}")
    nodes = upstream_in_reverse(graph, target)
    exact = all(node.linear for node in nodes)  # no relaxation: A alone gives both sides
    batch, rows = region.batch, coefficients.shape[1]
    coefficients = coefficients.expand(batch, *coefficients.shape[1:])
    stacked = {"both": [coefficients, -coefficients], "upper": [coefficients], "lower": [-coefficients]}[sides]
    pending = {target: coefficients if exact else torch.cat(stacked, dim=1)}
    bias = torch.zeros(batch, pending[target].shape[1], dtype=coefficients.dtype, device=coefficients.device)
    relaxations = {} if relaxations is None else relaxations
    for node in nodes:
        upper = pending.pop(node.output, None)
        if upper is None:
            continue
        deadline.check()  # a pass over a large conv net must not overrun the instance's timeout
        if extra is not None and node.output in extra:
            upper = upper + extra[node.output]
        relaxation = None if node.linear else node_relaxation(node, bounds, mode, lower_slopes, relaxations)
        if record is not None and not node.linear:
            record[node.output] = upper
        pushed, node_bias = node.rule.backward(upper, relaxation)
        bias = bias + node_bias
        for value, part in zip(node.inputs, pushed):
            pending[value] = pending[value] + part if value in pending else part
    if record is not None:
        record[graph.input_name] = pending.get(graph.input_name)
    result = _concretize(graph, region, pending.get(graph.input_name), bias)
    return result if exact else _split_sides(result.upper, rows, sides)


def compute_bounds(graph: Graph, region: Region, coefficients: torch.Tensor, mode: str,
                   dtype: torch.dtype = torch.float32, intermediate: dict[str, Interval] | None = None,
                   *, intersect_ibp: bool = True, batch_rows: int = 2048, sides: str = "both",
                   lower_slopes: dict[str, torch.Tensor] | None = None,
                   reference: dict[str, Interval] | None = None) -> Interval:
    """Bounds [B, K] of `coefficients @ output` (coefficients [B or 1, K, n_out]) over the region.

    Intermediate bounds come layer by layer by back-substitution (intersected with interval
    propagation when `intersect_ibp`); pre-filled entries of `intermediate` are used as given, and
    every bound computed is written back into it; every computed one is intersected with its entry
    in `reference`, if any. `batch_rows` caps problems x rows per pass.
    """
    graph, region, coefficients, known = prepared(graph, region, coefficients, dtype, intermediate)
    relaxations: dict[str, Relaxation] = {}
    bounds = layer_bounds(graph, region, mode, known, intersect_ibp=intersect_ibp, batch_rows=batch_rows,
                          lower_slopes=lower_slopes, relaxations=relaxations, reference=reference)
    if intermediate is not None:
        intermediate.update({name: bounds[name] for name in values_to_relax(graph) if name in bounds})
    rows = coefficients.reshape(coefficients.shape[0], coefficients.shape[1], *graph.output_shape)
    result = _bound_in_chunks(graph, region, graph.output_name, lambda start, stop: rows[:, start:stop],
                              rows.shape[1], bounds, mode, batch_rows,
                              sides=sides, lower_slopes=lower_slopes, relaxations=relaxations)
    if intersect_ibp and graph.output_name in bounds:
        result = result.intersect(interval_of_rows(coefficients, bounds[graph.output_name]))
    return result


ValueBounder = Callable[[str, dict[str, Interval]], Interval]  # (value, bounds so far) -> its bounds


def prepared(graph: Graph, region: Region, coefficients: torch.Tensor, dtype: torch.dtype,
             intermediate: dict[str, Interval] | None) -> tuple[Graph, Region, torch.Tensor, dict[str, Interval]]:
    """Graph, region, coefficients and given intermediate bounds in `dtype` on the region's device."""
    device = region_device(region)
    known = {name: Interval(b.lower.to(dtype=dtype, device=device), b.upper.to(dtype=dtype, device=device))
             for name, b in (intermediate or {}).items()}
    return (graph.to(dtype, device), region.to(dtype, device), coefficients.to(dtype=dtype, device=device),
            known)


def layer_bounds(graph: Graph, region: Region, mode: str, known: dict[str, Interval], *,
                 intersect_ibp: bool = True, batch_rows: int = 2048,
                 lower_slopes: dict[str, torch.Tensor] | None = None,
                 relaxations: dict[str, Relaxation] | None = None,
                 reference: dict[str, Interval] | None = None, skip_stable: bool = False) -> dict[str, Interval]:
    """Bounds of every value feeding a nonlinear node by dense back-substitution (see bound_layers).
    With `skip_stable`, only the neurons whose reference interval contains 0 in some problem are
    re-bounded (a ReLU's relaxation is exact on the others); the rest keep the reference."""
    def back_substituted(value: str, bounds: dict[str, Interval]) -> Interval:
        kept = (reference or {}).get(value) if skip_stable else None
        return _back_substituted(graph, region, value, bounds, mode, batch_rows, kept,
                                 lower_slopes=lower_slopes, relaxations=relaxations)

    return bound_layers(graph, region, known, back_substituted, intersect_ibp=intersect_ibp, reference=reference)


def bound_layers(graph: Graph, region: Region, known: dict[str, Interval], back_substituted: ValueBounder, *,
                 intersect_ibp: bool = True, reference: dict[str, Interval] | None = None,
                 bounds: dict[str, Interval] | None = None) -> dict[str, Interval]:
    """The one layer-by-layer loop of both back-substitution engines (dense here, patches in
    patches.py): bounds of every value feeding a nonlinear node, in topological order, by
    `back_substituted` (and, with `intersect_ibp`, the interval-propagation bound of every other value).

    Entries of `known` are used as given; every other bound is intersected with its entry in
    `reference`, if any (e.g. a branch-and-bound domain's parent bounds and split constraints). The
    result is written into `bounds` when given (an engine that reads it while bounding)."""
    needed = set(values_to_relax(graph))
    bounds = {} if bounds is None else bounds
    bounds[graph.input_name] = input_interval(graph, region)
    for node in graph.nodes:
        if node.output in known:
            bounds[node.output] = known[node.output]
        elif node.output in needed and exact_by_intervals(graph, region, node, bounds):
            bounds[node.output] = interval_image(node, bounds)
        elif node.output in needed and node.linear:
            bound = back_substituted(node.output, bounds)
            bounds[node.output] = bound.intersect(interval_image(node, bounds)) if intersect_ibp else bound
        elif node.output in needed or intersect_ibp:
            # an activation's output takes the image of its input interval (CNN-Cert 1.8); with
            # intersect_ibp every other value gets its interval-propagation bound
            bounds[node.output] = interval_image(node, bounds)
        kept = (reference or {}).get(node.output)
        if kept is not None and node.output in bounds and node.output not in known:
            bounds[node.output] = bounds[node.output].intersect(kept)
    return bounds


def exact_by_intervals(graph: Graph, region: Region, node: Node, bounds: dict[str, Interval]) -> bool:
    """True when the interval image of `node` is its exact range over the region: a box, only linear
    nodes up to it, at most one of which mixes its inputs (see LinearRule.mixes), and its inputs'
    intervals at hand. Back-substitution would give the same bounds at a far higher cost (one row per
    neuron of, say, a first convolution's whole output map)."""
    if not (isinstance(region, Box) or (isinstance(region, LpBall) and region.norm == float("inf"))):
        return False
    if not all(name in bounds for name in node.inputs):
        return False
    upstream = upstream_in_reverse(graph, node.output)
    return all(n.linear for n in upstream) and sum(bool(getattr(n.rule, "mixes", True)) for n in upstream) <= 1


def values_to_relax(graph: Graph) -> list[str]:
    """Names of the values that some nonlinear node consumes (their bounds define its relaxation)."""
    names = [name for node in graph.nodes if not node.linear for name in node.inputs]
    return list(dict.fromkeys(names))


def input_interval(graph: Graph, region: Region) -> Interval:
    """The region's bounding box shaped like the graph input, [B, *input_shape]."""
    box = region.bounding_box()
    return Interval(box.lower.reshape(-1, *graph.input_shape), box.upper.reshape(-1, *graph.input_shape))


def region_device(region: Region) -> torch.device:
    """The device the region's tensors live on (the computation follows it)."""
    return (region.lower if isinstance(region, Box) else region.center).device


def interval_of_rows(coefficients: torch.Tensor, bound: Interval) -> Interval:
    """Interval of `coefficients @ y` ([B or 1, K, n]) for y in the box `bound` ([B, *shape])."""
    lower, upper = bound.lower.flatten(start_dim=1).unsqueeze(1), bound.upper.flatten(start_dim=1).unsqueeze(1)
    positive, negative = coefficients.clamp(min=0), coefficients.clamp(max=0)
    return Interval((positive * lower + negative * upper).sum(-1), (positive * upper + negative * lower).sum(-1))


def _bound_in_chunks(graph: Graph, region: Region, target: str, rows: Callable[[int, int], torch.Tensor],
                     count: int, bounds: dict[str, Interval], mode: str, batch_rows: int, **options) -> Interval:
    """backward_bound over slices rows(start, stop) of the `count` coefficient rows, so that
    problems x rows stays under `batch_rows`."""
    step = max(1, batch_rows // region.batch)
    parts = [backward_bound(graph, region, target, rows(start, min(start + step, count)), bounds, mode, **options)
             for start in range(0, count, step)]
    return Interval(torch.cat([p.lower for p in parts], dim=1), torch.cat([p.upper for p in parts], dim=1))


def _back_substituted(graph: Graph, region: Region, value: str, bounds: dict[str, Interval], mode: str,
                      batch_rows: int, kept: Interval | None, **options) -> Interval:
    """Bounds of a value by back-substitution, one identity row per neuron; with `kept`, only the
    neurons whose kept interval contains 0 in some problem, the others keeping it."""
    shape, like = graph.shapes[value], bounds[graph.input_name].lower
    columns = torch.arange(prod(shape), device=like.device)
    if kept is not None:
        unstable = ((kept.lower < 0) & (kept.upper > 0)).flatten(1).expand(region.batch, -1)
        columns = unstable.any(0).nonzero()[:, 0]
        if not len(columns):
            return kept
        if options.get("lower_slopes") is None and 2 * int(unstable.sum()) < region.batch * len(columns):
            return _rebound_pairs(graph, region, value, bounds, mode, batch_rows, kept, unstable, **options)
    rows = partial(_identity_rows, shape, columns, like=like)
    flat = _bound_in_chunks(graph, region, value, rows, len(columns), bounds, mode, batch_rows, **options)
    if kept is None:
        return Interval(flat.lower.reshape(-1, *shape), flat.upper.reshape(-1, *shape))
    lower, upper = (t.flatten(1).expand(region.batch, -1).clone() for t in (kept.lower, kept.upper))
    lower[:, columns], upper[:, columns] = flat.lower, flat.upper
    return Interval(lower.reshape(-1, *shape), upper.reshape(-1, *shape))


def _rebound_pairs(graph: Graph, region: Region, value: str, bounds: dict[str, Interval], mode: str,
                   batch_rows: int, kept: Interval, unstable: torch.Tensor, **options) -> Interval:
    """Back-substitution for just the (problem, neuron) pairs flagged `unstable` ([B, N]), each pair a
    problem of its own with its problem's region and bounds: the cost follows the unstable count, not
    the batch times the union of unstable neurons (many small boxes, each with a few unstable ReLUs)."""
    shape = graph.shapes[value]
    lower, upper = (t.flatten(1).expand(region.batch, -1).clone() for t in (kept.lower, kept.upper))
    problems, columns = unstable.nonzero(as_tuple=True)
    relaxed = [node for node in upstream_in_reverse(graph, value) if not node.linear]
    cache = options.get("relaxations")
    cache = {} if cache is None else cache
    full = {node.output: node_relaxation(node, bounds, mode, None, cache) for node in relaxed}
    per_pair = sum(prod(t.shape[1:]) for r in full.values() for t in vars(r).values() if isinstance(t, torch.Tensor))
    step = max(1, min(batch_rows // 2, GATHERED_ENTRIES // max(1, per_pair)))
    for start in range(0, len(problems), step):
        problem, column = problems[start:start + step], columns[start:start + step]
        options["relaxations"] = {name: _select_relaxation(r, problem) for name, r in full.items()}
        rows = _identity_rows(shape, column, 0, len(column), like=lower).reshape(-1, 1, *shape)  # one a pair
        part = backward_bound(graph, region.select(problem), value, rows, {}, mode,
                              **options)  # the relaxations are given: no bounds needed
        lower[problem, column] = torch.maximum(lower[problem, column], part.lower[:, 0])
        upper[problem, column] = torch.minimum(upper[problem, column], part.upper[:, 0])
    return Interval(lower.reshape(-1, *shape), upper.reshape(-1, *shape))


def _select_relaxation(relaxation: Relaxation, problems: torch.Tensor) -> Relaxation:
    """The relaxation lines of the given problems (any Relaxation-like dataclass of [B, ...] tensors)."""
    return type(relaxation)(**{key: value[problems] if isinstance(value, torch.Tensor) and value.shape[0] > 1
                               else value for key, value in vars(relaxation).items()})


def _identity_rows(shape: tuple[int, ...], columns: torch.Tensor, start: int, stop: int,
                   like: torch.Tensor) -> torch.Tensor:
    """Rows start..stop of the identity rows picking `columns` of a value's neurons:
    [1, stop - start, *shape], in the dtype and device of `like`."""
    rows = torch.zeros(stop - start, prod(shape), dtype=like.dtype, device=like.device)
    rows[torch.arange(stop - start, device=like.device), columns[start:stop]] = 1
    return rows.reshape(1, stop - start, *shape)


def interval_image(node: Node, bounds: dict[str, Interval]) -> Interval:
    """Interval propagation through one node from the bounds of its inputs."""
    return node.rule.interval(*(bounds[name] for name in node.inputs))


def upstream_in_reverse(graph: Graph, target: str) -> list[Node]:
    """The nodes up to and including the producer of `target`, last first."""
    for index, node in enumerate(graph.nodes):
        if node.output == target:
            return graph.nodes[index::-1]
    return []  # the target is the graph input


def node_relaxation(node: Node, bounds: dict[str, Interval], mode: str,
                    lower_slopes: dict[str, torch.Tensor] | None, cache: dict[str, Relaxation]) -> Relaxation:
    """The node's relaxation on its input bounds, computed once per cache (keyed by output value)."""
    if node.output not in cache:
        missing = [name for name in node.inputs if name not in bounds]
        if missing:
            raise ValueError(f"{node.op_type} node '{node.name}' needs bounds of {missing} to be relaxed")
        slope = None if lower_slopes is None else lower_slopes.get(node.output)
        cache[node.output] = node.rule.relax(*(bounds[name] for name in node.inputs), mode=mode, lower_slope=slope)
    return cache[node.output]


def _concretize(graph: Graph, region: Region, coefficients: torch.Tensor | None,
                bias: torch.Tensor) -> Interval:
    """Bounds over the region of `coefficients . input + bias` (coefficients None: zero)."""
    batch, rows = bias.shape
    if coefficients is None:
        return Interval(bias, bias)
    flat = coefficients.expand(batch, *coefficients.shape[1:]).reshape(batch, rows, graph.input_size)
    return region.concretize(LinearBound(flat, bias))


def _split_sides(upper: torch.Tensor, rows: int, sides: str) -> Interval:
    """Undo the [A; -A] stacking: the lower bound of A.y is minus the upper bound of -A.y."""
    infinite = torch.full_like(upper[:, :rows], float("inf"))
    if sides == "upper":
        return Interval(-infinite, upper)
    if sides == "lower":
        return Interval(-upper, infinite)
    return Interval(-upper[:, rows:], upper[:, :rows])
