"""`group-dual`: Lagrangian decomposition over groups of neurons that read the same few inputs.

For a network with one activation layer, z = A x + c (linear ops before it), y = T(act(z)) (linear ops
after it; act piecewise linear, as a ReLU or LeakyReLU: a rule with `kinks`), an output row r gives
f(x) = r . y = sum_n v_n act(z_n) + d, with v the row's coefficients on act(z). Neurons whose weights
touch the same set S of inputs (a convolution's channels at one position, over their small patch) form
a group g, and f is the sum of the groups' f_g(x_S). Each group gets its own copy x_g of its inputs,
priced by multipliers lambda_g (Lagrangian decomposition, Bunel et al. 2020); by weak duality, for
every lambda

    min f >= sum_g min_{x_g in box_S} [f_g(x_g) + lambda_g . x_g] + min_{x in region} [-(sum_g lambda_g) . x] + d.

f_g is piecewise linear on at most `max_group_inputs` inputs, so each inner minimum lies on a vertex of
the cells its unstable neurons' hyperplanes cut in the box: those vertices are enumerated once, and
each group's term is then exact (its convex hull), where single-neuron relaxations (CROWN,
alpha-CROWN, the triangle LP) lose how neurons that share their inputs move together. The bound is
concave in lambda; Adam ascends it from CROWN's lines (lambda_g = minus the group's share of CROWN's
linear bound), keeping the best, so it is never looser than CROWN with the same (exact) pre-activation
intervals.
"""
from __future__ import annotations

import functools
import itertools
import time
import weakref
from dataclasses import dataclass
from typing import ClassVar

import torch

from verikit.adam import Adam
from verikit.bounds import Interval, LinearBound
from verikit.errors import PluginError
from verikit.graph import Graph, Node
from verikit.hookspecs import hookimpl
from verikit.methods.base import Method
from verikit.region import Region

MAX_GROUP_NEURONS = 32  # a group's neurons: C(neurons + 2 d, d) vertex candidates are solved for
INPUT_CHUNK = 64  # unit inputs pushed through the layer at once to read its weights
ENTRIES = 1 << 24  # rows x groups x vertices scored at once: a memory cap
F64 = torch.float64


@dataclass
class GroupDualOptions:
    """Options of `group-dual`."""

    steps: int = 300  # Adam steps on the multipliers
    lr: float = 0.2  # Adam's learning rate, as a fraction of the mean |initial multiplier|
    lr_decay: float = 0.99  # learning rate factor per step
    max_group_inputs: int = 4  # the most inputs one group may read: vertices grow as (neurons + 2 d)^d


@dataclass
class _Group:
    """Neurons reading the same inputs: z[neurons] = weights @ x[inputs] + bias."""

    inputs: torch.Tensor  # [d] flat input indices
    neurons: torch.Tensor  # [m] flat indices into the activation's input
    weights: torch.Tensor  # [m, d]
    bias: torch.Tensor  # [m]


@dataclass
class OneLayer:
    """A network y = T(act(A x + c)) cut where group-dual needs it: the graph in float64, the
    activation node and its index in graph.nodes (the nodes before it compute z, those after it T),
    the groups of its neurons, and the neurons that read no input with their constant z."""

    graph: Graph
    activation: Node
    position: int
    groups: list[_Group]
    alone: torch.Tensor  # [a] flat indices of neurons that read no input
    constant: torch.Tensor  # [N] z at x = 0


class GroupDual(Method):
    name = "group-dual"
    kind = "bound"
    summary = "one-activation-layer nets: Lagrangian decomposition over neurons sharing a few inputs, exact per group"
    Options: ClassVar[type] = GroupDualOptions
    needs = ("forward", "relax")

    def __init__(self):
        self._last: tuple | None = None  # (weak reference to a graph, max_group_inputs, its OneLayer)

    def applies(self, graph: Graph) -> bool:
        try:
            self._layout(graph, self.default_options().max_group_inputs)
        except PluginError:
            return False
        return True

    def bound(self, graph: Graph, region: Region, coefficients: torch.Tensor, options=None,
              intermediate: dict[str, Interval] | None = None, deadline: float | None = None) -> Interval:
        """Bounds [B, K] of `coefficients @ output` over the region (see Method.bound); no step starts
        after `deadline`."""
        options = options or self.default_options()
        layout = self._layout(graph, options.max_group_inputs)
        rows = coefficients.to(F64).cpu().expand(region.batch, *coefficients.shape[1:])
        box = region.bounding_box()
        lower, upper = [], []
        for problem in range(region.batch):
            signed = torch.cat([rows[problem], -rows[problem]])
            found = _bound_problem(layout, region.select(torch.tensor([problem])).to(F64, "cpu"),
                                   box.lower[problem].to(F64).cpu(), box.upper[problem].to(F64).cpu(),
                                   signed, options, deadline)
            lower.append(found[: rows.shape[1]])
            upper.append(-found[rows.shape[1]:])
        device, dtype = coefficients.device, coefficients.dtype
        return Interval(torch.stack(lower).to(device, dtype), torch.stack(upper).to(device, dtype))

    def _layout(self, graph: Graph, max_group_inputs: int) -> OneLayer:
        """one_layer(graph), read once for the graph `verify` asks `applies` about and then bounds."""
        if self._last is not None and self._last[0]() is graph and self._last[1] == max_group_inputs:
            return self._last[2]
        layout = one_layer(graph, max_group_inputs)
        self._last = (weakref.ref(graph), max_group_inputs, layout)
        return layout


def one_layer(graph: Graph, max_group_inputs: int) -> OneLayer:
    """The graph's one activation layer with its neurons grouped by the inputs they read; a PluginError
    naming what does not fit when the graph is not of that form (another nonlinear op, a later node
    reading values before the activation, a neuron reading more than `max_group_inputs` inputs)."""
    def refuse(place: str, what: str) -> PluginError:
        return PluginError(f"group-dual needs one piecewise-linear activation layer (a rule with kinks: ReLU, "
                           f"LeakyReLU, ...) with only linear ops around it, whose "
                           f"neurons each read at most {max_group_inputs} inputs; {what}", path=graph.source or None,
                           place=place, fix="use alpha-crown or crown for this network")

    nonlinear = [i for i, node in enumerate(graph.nodes) if not node.linear]
    if len(nonlinear) != 1 or not graph.nodes[nonlinear[0]].rule.kinks:
        names = ", ".join(f"{graph.nodes[i].op_type} {graph.nodes[i].name}" for i in nonlinear[:3])
        raise refuse("nonlinear nodes", f"this network has {len(nonlinear)} ({names}{', ...' * (len(nonlinear) > 3)})")
    position = nonlinear[0]
    activation = graph.nodes[position]
    before = {graph.input_name} | {node.output for node in graph.nodes[:position]}
    for node in graph.nodes[position + 1:]:
        if any(name in before for name in node.inputs):
            raise refuse(f"node {node.name}", "it reads a value from before the activation")
    if graph.output_name in before:
        raise refuse(f"node {activation.name}", "the output does not depend on the activation")
    graph64 = graph.to(F64)
    read = _read_weights(graph64, position, max_group_inputs)
    if read is None:
        raise refuse(f"node {activation.name}", f"some of its neurons read more than {max_group_inputs} inputs")
    constant, (pairs, weights) = read
    alone = torch.ones(len(constant), dtype=torch.bool)
    alone[pairs[:, 1]] = False
    return OneLayer(graph64, graph64.nodes[position], position, _groups((pairs, weights), constant),
                    alone.nonzero()[:, 0], constant)


def _prefix(graph: Graph, position: int, x: torch.Tensor) -> torch.Tensor:
    """The activation's input [M, N] at flat inputs x [M, n]."""
    values = {graph.input_name: graph.shape_input(x)}
    for node in graph.nodes[:position]:
        values[node.output] = node.rule.forward(*(values[name] for name in node.inputs))
    return values[graph.nodes[position].inputs[0]].reshape(x.shape[0], -1)


def _read_weights(graph: Graph, position: int, max_group_inputs: int):
    """z = A x + c read off by pushing unit inputs through the (affine) layers before the activation:
    c [N] and A's nonzeros as (input, neuron, weight) rows, or None once a neuron reads too many inputs."""
    n = graph.input_size
    with torch.no_grad():
        constant = _prefix(graph, position, torch.zeros(1, n, dtype=F64))[0]
        counts = torch.zeros_like(constant, dtype=torch.long)
        found = []
        for start in range(0, n, INPUT_CHUNK):
            count = min(INPUT_CHUNK, n - start)
            units = torch.zeros(count, n, dtype=F64)
            units[torch.arange(count), start + torch.arange(count)] = 1.0
            columns = _prefix(graph, position, units) - constant
            counts += (columns != 0).sum(0)
            if int(counts.max()) > max_group_inputs:
                return None
            where = columns.nonzero()
            found.append(torch.stack([where[:, 0] + start, where[:, 1]], 1))
            found.append(columns[where[:, 0], where[:, 1]].unsqueeze(1))
    pairs = torch.cat(found[0::2]) if found else torch.zeros(0, 2, dtype=torch.long)
    weights = torch.cat(found[1::2])[:, 0] if found else torch.zeros(0, dtype=F64)
    return constant, (pairs, weights)


def _groups(entries, constant: torch.Tensor) -> list[_Group]:
    """Neurons grouped by the exact set of inputs they read (neurons reading none stay out), at most
    MAX_GROUP_NEURONS a group: more are cut into several groups, each with its own copy of the inputs
    (still a valid decomposition, only looser), so the vertex candidates stay few."""
    pairs, weights = entries
    order = torch.argsort(pairs[:, 1] * (pairs[:, 0].max() + 1 if len(pairs) else 1) + pairs[:, 0])
    pairs, weights = pairs[order], weights[order]
    by_inputs: dict[tuple[int, ...], list[tuple[int, list[float]]]] = {}
    neurons, counts = torch.unique_consecutive(pairs[:, 1], return_counts=True)
    start = 0
    for neuron, count in zip(neurons.tolist(), counts.tolist()):
        inputs = tuple(pairs[start:start + count, 0].tolist())
        by_inputs.setdefault(inputs, []).append((neuron, weights[start:start + count].tolist()))
        start += count
    groups = []
    for inputs, members in by_inputs.items():
        for first in range(0, len(members), MAX_GROUP_NEURONS):
            chunk = members[first:first + MAX_GROUP_NEURONS]
            index = torch.tensor([neuron for neuron, _ in chunk])
            groups.append(_Group(torch.tensor(inputs), index, torch.tensor([w for _, w in chunk], dtype=F64),
                                 constant[index]))
    return groups


@functools.lru_cache(maxsize=64)
def _combinations(count: int, size: int) -> torch.Tensor:
    """Every `size`-subset of range(count), as rows [M, size]."""
    return torch.tensor(list(itertools.combinations(range(count), size)), dtype=torch.long).reshape(-1, size)


def _vertices(weights: torch.Tensor, bias: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Every point of the box [lower, upper] (d dims) where d independent constraints are tight, among
    the hyperplanes weights[j] . x + bias[j] = 0 and the box's faces: the vertices of the cells the
    hyperplanes cut, where a piecewise-linear function of x has its minimum over the box. [M, d]."""
    d = lower.shape[0]
    planes = torch.cat([weights, torch.eye(d, dtype=F64), torch.eye(d, dtype=F64)])
    targets = torch.cat([-bias, lower, upper])
    chosen = _combinations(len(planes), d)
    systems, sides = planes[chosen], targets[chosen]
    scale = torch.linalg.vector_norm(systems, dim=2).prod(1)
    independent = torch.linalg.det(systems).abs() > 1e-10 * scale  # Hadamard: |det| <= the norms' product
    points = torch.linalg.solve(systems[independent], sides[independent])
    slack = 1e-9 * (1 + (upper - lower))
    inside = ((points >= lower - slack) & (points <= upper + slack)).all(1)
    return torch.maximum(torch.minimum(points[inside], upper), lower)


def _bound_problem(layout: OneLayer, region: Region, lower: torch.Tensor, upper: torch.Tensor,
                   rows: torch.Tensor, options: GroupDualOptions, deadline: float | None = None) -> torch.Tensor:
    """Lower bounds [K] of rows [K, n_out] . output over one problem's region (box: lower, upper)."""
    slopes, offset = _tail(layout, rows)
    act = layout.activation.rule
    with torch.no_grad():  # neurons reading no input add a constant
        offset = offset + slopes[:, layout.alone] @ act.forward(layout.constant[layout.alone])
    read = [g for g in layout.groups if bool(slopes[:, g.neurons].any())]  # f_g = 0 for every row: no term
    parts = [_group_part(g, act, slopes, lower[g.inputs], upper[g.inputs]) for g in read]
    return _ascend(parts, region, offset, lower.shape[0], options, deadline)


def _tail(layout: OneLayer, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' coefficients v [K, N] on the activation's output and their offsets d [K]: the layers
    after it are affine, so one backward pass from act(z) = 0 reads both."""
    graph, node = layout.graph, layout.activation
    with torch.enable_grad():
        output = torch.zeros(rows.shape[0], *graph.shapes[node.output], dtype=F64, requires_grad=True)
        values = {node.output: output}
        for later in graph.nodes[layout.position + 1:]:
            values[later.output] = later.rule.forward(*(values[name] for name in later.inputs))
        y = values[graph.output_name].reshape(rows.shape[0], -1)
        offset = (y * rows).sum(1)
        (slopes,) = torch.autograd.grad(offset.sum(), output)
    return slopes.reshape(rows.shape[0], -1), offset.detach()


@dataclass
class _Part:
    """One group's vertices [M, d], the rows' values of f_g there [K, M], and CROWN's multipliers [K, d]."""

    inputs: torch.Tensor
    vertices: torch.Tensor
    values: torch.Tensor
    start: torch.Tensor


def _group_part(group: _Group, act, slopes: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> _Part:
    """Vertices and values of one group, and the multipliers that reproduce CROWN's lines on it."""
    center, radius = (lower + upper) / 2, (upper - lower) / 2
    z = Interval(group.weights @ center + group.bias - group.weights.abs() @ radius,
                 group.weights @ center + group.bias + group.weights.abs() @ radius)
    # every kink inside a neuron's interval cuts the box along weights . x + bias = kink
    planes = [(group.weights[inside], group.bias[inside] - kink) for kink in act.kinks
              for inside in [(z.lower < kink) & (z.upper > kink)]]
    vertices = _vertices(torch.cat([w for w, _ in planes]), torch.cat([b for _, b in planes]), lower, upper)
    with torch.no_grad():
        values = slopes[:, group.neurons] @ act.forward(group.weights @ vertices.T + group.bias.unsqueeze(1))
        lines = act.relax(z, mode="adaptive")
    v = slopes[:, group.neurons]  # [K, m]: the lower line where v >= 0, the upper line where v < 0
    slope = torch.where(v >= 0, lines.lower_slope, lines.upper_slope)
    return _Part(group.inputs, vertices, values, -(v * slope) @ group.weights)


def _padded(parts: list[_Part], rows: int, n: int):
    """The parts stacked, padded to the widest group and the most vertices: vertices [G, M, d], values
    [K, G, M] (+inf where padded), inputs [G, d] (padding reads a spare column n), start [K, G, d]."""
    width = max((p.inputs.shape[0] for p in parts), default=0)
    size = max((p.vertices.shape[0] for p in parts), default=1)
    vertices = torch.zeros(len(parts), size, width, dtype=F64)
    values = torch.full((rows, len(parts), size), float("inf"), dtype=F64)
    inputs = torch.full((len(parts), width), n, dtype=torch.long)
    start = torch.zeros(rows, len(parts), width, dtype=F64)
    for i, part in enumerate(parts):
        m, d = part.vertices.shape
        vertices[i, :m, :d], values[:, i, :m] = part.vertices, part.values
        inputs[i, :d], start[:, i, :d] = part.inputs, part.start
    return vertices, values, inputs, start


def _ascend(parts: list[_Part], region: Region, offset: torch.Tensor, n: int,
            options: GroupDualOptions, deadline: float | None = None) -> torch.Tensor:
    """Adam on the multipliers of every group and row (no step starts after `deadline`); the best bound
    per row, less a rounding slack."""
    rows, count = offset.shape[0], len(parts)
    vertices, values, inputs, start = _padded(parts, rows, n)
    size = vertices.shape[1]
    multipliers = start.clone()
    scale = float(start.abs().mean()) if count else 1.0
    adam = Adam([multipliers], options.lr * (scale or 1.0), maximize=True)
    chunk = max(1, ENTRIES // max(1, count * size))
    best = torch.full((rows,), float("-inf"), dtype=F64)
    for step in range(max(1, options.steps)):
        terms, gradient = _group_terms(vertices, values, multipliers, chunk)
        total = multipliers.new_zeros(rows, n + 1).index_add(1, inputs.flatten(), multipliers.reshape(rows, -1))
        with torch.enable_grad():
            spread = total[:, :n].requires_grad_(True)
            rest = region.concretize(LinearBound(-spread.unsqueeze(0), offset.new_zeros(1, rows))).lower[0]
            (minimiser,) = torch.autograd.grad(rest.sum(), spread)  # minus the region's minimising x
        bound = terms.sum(1) + rest.detach() + offset
        slack = 1e-9 * (1 + terms.abs().sum(1) + rest.detach().abs() + offset.abs())
        best = torch.maximum(best, bound - slack)
        if step == options.steps - 1 or (deadline is not None and time.monotonic() >= deadline):
            break
        gradient += torch.cat([minimiser, minimiser.new_zeros(rows, 1)], 1)[:, inputs]  # d rest / d multipliers
        adam.step([gradient], options.lr_decay ** step)
    return best


def _group_terms(vertices: torch.Tensor, values: torch.Tensor, multipliers: torch.Tensor, chunk: int,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's term min over its vertices of f_g + lambda_g . x_g ([K, G]) and its gradient in
    lambda ([K, G, d]: the minimising vertex), in chunks of rows."""
    terms, gradients = [], []
    for k in range(0, values.shape[0], chunk):
        scores = values[k:k + chunk] + torch.einsum("gmd,kgd->kgm", vertices, multipliers[k:k + chunk])
        term, which = scores.min(2)
        terms.append(term)
        gradients.append(vertices[torch.arange(vertices.shape[0]), which])  # [k, G, d]
    return torch.cat(terms), torch.cat(gradients)


@hookimpl
def verikit_methods(register) -> None:
    register(GroupDual())
