"""Forward-mode linear bounds (symbolic intervals: ReluVal / Neurify; auto_LiRPA's forward mode).

Every value gets a lower and an upper linear function of the network input, pushed forward node by
node: a linear node maps the pair by its weights (y = W mid + |W| rad, with mid and rad the centre and
half-width of the pair as functions), an elementwise nonlinearity by its relaxation lines. On inputs of
a few dimensions this costs O(layers x width^2 x inputs) per problem, against back-substitution's
O(layers^2 x width^3) for the same intermediate bounds, which it can only match or loosen: the
input-splitting branch and bound bounds its many small boxes this way and keeps back-substitution
for the spec rows (`bounds_by_forward_mode`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from verikit.bounds import Interval
from verikit.graph import Graph, Node
from verikit.layers.base import ElementwiseRule, LinearRule
from verikit.region import Box


@dataclass(frozen=True)
class SymbolicBound:
    """Linear functions of the input offset e = x - centre of the region's box, e in [-radius, radius]:
    lower/upper are [B, n + 1, *shape], rows 0..n-1 the coefficients of e, row n the constant."""

    lower: torch.Tensor
    upper: torch.Tensor

    def concretize(self, radius: torch.Tensor) -> Interval:
        """Bounds over the box: the constant -/+ |coefficients| . radius; radius [B, n]."""
        width = radius.reshape(*radius.shape, *(1,) * (self.lower.dim() - 2))
        lower = self.lower[:, -1] - (self.lower[:, :-1].abs() * width).sum(1)
        upper = self.upper[:, -1] + (self.upper[:, :-1].abs() * width).sum(1)
        return Interval(lower, upper)


def supports_forward_mode(graph: Graph) -> bool:
    """True when every node is a linear rule or a one-input elementwise nonlinearity."""
    return all(isinstance(n.rule, LinearRule) or (isinstance(n.rule, ElementwiseRule) and len(n.inputs) == 1)
               for n in graph.nodes)


def bounds_by_forward_mode(graph: Graph, box: Box, mode: str = "adaptive") -> dict[str, Interval]:
    """The interval of every value over each box of the batch ([B, n] lower/upper), from forward-mode
    linear bounds intersected with interval propagation."""
    box = Box(box.lower.reshape(box.batch, -1), box.upper.reshape(box.batch, -1))
    radius = (box.upper - box.lower) / 2
    batch, size = radius.shape
    identity = torch.eye(size, dtype=radius.dtype, device=radius.device).expand(batch, size, size)
    start = torch.cat([identity, box.center.unsqueeze(1)], 1).reshape(batch, size + 1, *graph.input_shape)
    symbolic = {graph.input_name: SymbolicBound(start, start)}
    bounds = {graph.input_name: Interval(box.lower.reshape(batch, *graph.input_shape),
                                         box.upper.reshape(batch, *graph.input_shape))}
    for node in graph.nodes:
        inputs = [symbolic[name] for name in node.inputs]
        image = node.rule.interval(*(bounds[name] for name in node.inputs))
        if node.linear:
            result = _through_linear(node, inputs, size + 1)
        else:
            relaxation = node.rule.relax(bounds[node.inputs[0]], mode=mode)
            result = _through_relaxation(inputs[0], relaxation)
        symbolic[node.output] = result
        bounds[node.output] = result.concretize(radius).intersect(image)
    return bounds


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    """[B, n + 1, *shape] -> [B (n + 1), *shape]: the rows as samples of the rule."""
    return tensor.reshape(-1, *tensor.shape[2:])


def _through_linear(node: Node, inputs: list[SymbolicBound], rows: int) -> SymbolicBound:
    """y = L(x) + offset: L(mid) -/+ |L|(rad) (|L| is linear, so it maps signed coefficients too)."""
    rule: LinearRule = node.rule
    middle = rule.linear_part(*(_rows((b.lower + b.upper) / 2) for b in inputs))
    spread = rule.absolute(*(_rows((b.upper - b.lower) / 2) for b in inputs))
    middle = middle.reshape(-1, rows, *middle.shape[1:])
    spread = spread.reshape(-1, rows, *spread.shape[1:])
    offset = rule.offset(*(_rows(b.lower)[:1] for b in inputs))
    middle = torch.cat([middle[:, :-1], middle[:, -1:] + offset.unsqueeze(1)], 1)
    return SymbolicBound(middle - spread, middle + spread)


def _through_relaxation(bound: SymbolicBound, relaxation) -> SymbolicBound:
    """f(z) between slope . z + intercept lines: each side takes the input's side its slope's sign picks."""
    def line(slope: torch.Tensor, intercept: torch.Tensor, same: torch.Tensor, other: torch.Tensor):
        slope = slope.unsqueeze(1)
        value = slope.clamp(min=0) * same + slope.clamp(max=0) * other
        return torch.cat([value[:, :-1], value[:, -1:] + intercept.unsqueeze(1)], 1)

    return SymbolicBound(line(relaxation.lower_slope, relaxation.lower_intercept, bound.lower, bound.upper),
                         line(relaxation.upper_slope, relaxation.upper_intercept, bound.upper, bound.lower))
