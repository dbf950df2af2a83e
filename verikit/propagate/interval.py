"""Forward interval pass (IBP): the interval image of every value of the graph."""
from __future__ import annotations

import torch

from verikit import deadline
from verikit.bounds import Interval
from verikit.graph import Graph


def interval_pass(graph: Graph, input_bound: Interval,
                  bounds: dict[str, Interval] | None = None) -> dict[str, Interval]:
    """Bounds of every value from a box on the input ([B, n] flat or [B, *input_shape]).

    Bounds already in `bounds` (e.g. tighter ones from a linear method) are intersected with the IBP
    image, so the pass never loosens what the caller knows."""
    bounds = {} if bounds is None else bounds
    shape = lambda t: graph.shape_input(t)  # noqa: E731
    bounds[graph.input_name] = Interval(shape(input_bound.lower), shape(input_bound.upper))
    for node in graph.nodes:
        deadline.check()  # one pass over a large conv net can take seconds: the instance's timeout holds
        image = node.rule.interval(*(bounds[name] for name in node.inputs))
        known = bounds.get(node.output)
        bounds[node.output] = image if known is None else image.intersect(known)
    return bounds


def affine_image(coefficients: torch.Tensor, bound: Interval) -> Interval:
    """Interval of coefficients [B or 1, K, n] @ y for y in a flat box [B, n]."""
    center, radius = bound.center.unsqueeze(-1), bound.radius.unsqueeze(-1)
    mid = (coefficients @ center).squeeze(-1)
    spread = (coefficients.abs() @ radius).squeeze(-1)
    return Interval(mid - spread, mid + spread)
