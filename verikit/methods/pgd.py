"""`pgd`: projected gradient attack on the property's margin (Madry et al. 2018), with random restarts.

For each region it minimises, from many starting points, the violation of each unsafe clause (the
largest `c . y - d` over the clause's rows, plus any input-constraint excess): a point with
violation <= 0 inside the region is a counterexample. Every iterate is projected back into the region.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.methods.base import Method
from verikit.region import Box
from verikit.spec.property import Property, RegionSpec


@dataclass
class PGDOptions:
    """restarts: starting points per clause; steps: gradient steps; samples: random points tried first."""

    restarts: int = 32
    steps: int = 60
    samples: int = 2048
    seed: int = 0
    margin: float = 1e-6  # aim this far past the boundary so float32 re-checks agree


class PGD(Method):
    name = "pgd"
    kind = "attack"
    summary = "projected gradient attack on the spec margin, random restarts (Madry et al. 2018)"
    Options = PGDOptions
    needs = ("forward",)

    def attack(self, graph: Graph, prop: Property, options: PGDOptions | None = None,
               deadline: float | None = None):
        options = options or PGDOptions()
        generator = torch.Generator().manual_seed(options.seed)
        graph64 = graph.to(torch.float64)
        for spec in prop.regions:
            found = _sample(graph64, spec, options, generator)
            if found is None and (deadline is None or time.monotonic() < deadline):
                found = _descend(graph64, spec, options, generator, deadline)
            if found is not None:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                break
        return None


def _clause_violations(spec: RegionSpec, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """[points, clauses] violation of each clause (<= 0 means satisfied)."""
    columns = [clause.slack(outputs) for clause in spec.clauses]
    value = torch.stack(columns, -1)
    if spec.input_constraints is not None:
        value = torch.maximum(value, spec.input_constraints.slack(inputs).unsqueeze(-1))
    return value


def _best(points: torch.Tensor, violation: torch.Tensor, graph: Graph):
    """The most violating point as a flat (input, output) pair if it violates the spec, else None."""
    index = int(violation.argmin())
    if float(violation[index]) > 0:
        return None
    x = points[index].detach()
    with torch.no_grad():
        y = graph.forward_flat(x.unsqueeze(0))[0]
    return x, y


def _sample(graph: Graph, spec: RegionSpec, options: PGDOptions, generator: torch.Generator):
    region = spec.region.to(torch.float64)
    points = torch.cat([_center(region), region.sample(options.samples, generator)[0]])
    with torch.no_grad():
        outputs = graph.forward_flat(points)
    violation = _clause_violations(spec, points, outputs).min(-1).values
    return _best(points, violation, graph)


def _center(region) -> torch.Tensor:
    return region.center if isinstance(region, Box) else region.project(region.center.unsqueeze(1))[0]


def _descend(graph: Graph, spec: RegionSpec, options: PGDOptions, generator: torch.Generator,
             deadline: float | None):
    """Signed-gradient descent on every clause's violation from `restarts` random starts each."""
    region = spec.region.to(torch.float64)
    clauses = len(spec.clauses)
    starts = region.sample(options.restarts * clauses, generator)  # [1, R*C, n]
    assigned = torch.arange(clauses).repeat_interleave(options.restarts)
    lower, upper = region.bounding_box().lower, region.bounding_box().upper
    width = (upper - lower).clamp_min(1e-12)
    x = starts[0].clone()
    for step in range(options.steps):
        if deadline is not None and time.monotonic() >= deadline:
            break
        x.requires_grad_(True)
        outputs = graph.forward_flat(x)
        violation = _clause_violations(spec, x, outputs).gather(1, assigned.unsqueeze(1)).squeeze(1)
        if float(violation.detach().min()) <= -options.margin:
            return _best(x, violation.detach(), graph)
        (gradient,) = torch.autograd.grad(violation.sum(), x)
        size = 0.5 * (1 - step / options.steps) + 0.01  # fraction of the box width, decaying
        with torch.no_grad():
            x = region.project((x - size * width * _direction(gradient, region)).unsqueeze(0))[0]
    with torch.no_grad():
        outputs = graph.forward_flat(x)
        violation = _clause_violations(spec, x, outputs).gather(1, assigned.unsqueeze(1)).squeeze(1)
    return _best(x, violation, graph)


def _direction(gradient: torch.Tensor, region) -> torch.Tensor:
    """Steepest-descent direction for the region's norm (sign for boxes and L-inf balls)."""
    norm = getattr(region, "norm", float("inf"))
    if norm == float("inf"):
        return gradient.sign()
    scale = gradient.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return gradient / scale * gradient.shape[-1] ** 0.5


@hookimpl
def verikit_methods(register) -> None:
    register(PGD())
