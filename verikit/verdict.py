"""The outcome of verification, and the check that makes a `sat` one: a counterexample is reported
only once onnxruntime (the reference semantics) confirms it, by the rule in README "Counterexamples".
Core, not pipeline: the complete methods confirm their own candidates with it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from verikit.graph import Graph
from verikit.spec.property import Property


@dataclass
class Verdict:
    """The outcome of a verification: `sat` carries a counterexample (flat input and output)."""

    status: str  # "sat" | "unsat" | "unknown" | "timeout" | "error"
    method: str = ""
    counterexample: tuple[torch.Tensor, torch.Tensor] | None = None
    seconds: float = 0.0
    detail: str = ""
    notes: list[str] = field(default_factory=list)


def confirm(graph: Graph, prop: Property, candidate, method: str) -> Verdict | None:
    """A `sat` verdict if onnxruntime agrees that the candidate input violates the property.

    The rule (README, "Counterexamples"): the reported input x lies in the spec's box exactly, in float64;
    each coordinate is a float32 value wherever one lies in its interval, and the spec's own value where
    none does (an input pinned to 0.1, say). The network is run by onnxruntime on float32(x), which differs
    from x by at most half a float32 ulp, and its output must satisfy the unsafe clause with no tolerance:
    never weaker than VNN-COMP's check, which allows 1e-4 on both."""
    x = reported_input(prop, candidate[0].detach().double())
    if graph.source and Path(graph.source).is_file():
        from verikit.onnx_runtime import evaluate
        y = torch.from_numpy(evaluate(graph.source, graph, x.numpy()[None]))[0]
    else:
        with torch.no_grad():
            y = graph.to(torch.float32).forward_flat(x.float()[None])[0].double()
    if not prop.is_counterexample(x, y):
        return None
    return Verdict("sat", method=method, counterexample=(x, y))


def reported_input(prop: Property, x: torch.Tensor) -> torch.Tensor:
    """The counterexample input to report for the float64 candidate x: clamped into the box of the
    nearest region (a float32 search may end a rounding outside it; onnxruntime re-checks the output
    anyway), each coordinate rounded to float32 (nudged one ulp back inside where rounding left the
    box), or kept in float64 where no float32 value lies in its interval (a pinned or sub-ulp input)."""
    boxes = [spec.region.bounding_box() for spec in prop.regions]
    distances = [float((x - x.clamp(b.lower[0].double(), b.upper[0].double())).abs().max()) for b in boxes]
    box = boxes[distances.index(min(distances))]
    lower, upper = box.lower[0].double(), box.upper[0].double()
    x = x.clamp(lower, upper)
    x32 = x.float()
    up = torch.nextafter(x32, torch.tensor(np.inf, dtype=torch.float32))
    down = torch.nextafter(x32, torch.tensor(-np.inf, dtype=torch.float32))
    x32 = torch.where(x32.double() < lower, up, x32)
    x32 = torch.where(x32.double() > upper, down, x32)
    inside = (x32.double() >= lower) & (x32.double() <= upper)
    return torch.where(inside, x32.double(), x)
