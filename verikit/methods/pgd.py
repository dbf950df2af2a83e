"""`pgd`: projected gradient attack on the property's margin (Madry et al. 2018), with random restarts.

For each region it minimises, from many starting points, the violation of each unsafe clause (the
largest `c . y - d` over the clause's rows, plus any input-constraint excess): a point with
violation <= 0 inside the region is a counterexample. Every iterate is projected back into the region.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from verikit.adam import Adam
from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.methods.base import Method
from verikit.region import Box
from verikit.spec.property import Property, RegionSpec


@dataclass
class PGDOptions:
    """restarts: starting points per clause (at most max_points in all); steps: Adam steps of
    step_size x the region's width; samples: random points tried first."""

    restarts: int = 64
    max_points: int = 512
    steps: int = 100
    step_size: float = 0.1
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


def _best(points: torch.Tensor, outputs: torch.Tensor, violation: torch.Tensor):
    """The most violating point and its (already computed) output, if it violates the spec, else None."""
    index = int(violation.argmin())
    if float(violation[index]) > 0:
        return None
    return points[index].detach(), outputs[index].detach()


def _sample(graph: Graph, spec: RegionSpec, options: PGDOptions, generator: torch.Generator):
    region = spec.region.to(torch.float64)
    points = torch.cat([_center(region), region.sample(options.samples, generator)[0]])
    with torch.no_grad():
        outputs = graph.forward_flat(points)
    violation = _clause_violations(spec, points, outputs).min(-1).values
    return _best(points, outputs, violation)


def _center(region) -> torch.Tensor:
    return region.center if isinstance(region, Box) else region.project(region.center.unsqueeze(1))[0]


def _descend(graph: Graph, spec: RegionSpec, options: PGDOptions, generator: torch.Generator,
             deadline: float | None):
    """Adam on every clause's hinge loss from `restarts` random starts each, in coordinates scaled to
    the region's bounding box, projecting back into the region after every step."""
    region = spec.region.to(torch.float64)
    clauses = len(spec.clauses)
    restarts = max(1, min(options.restarts, options.max_points // clauses))
    assigned = torch.arange(clauses).repeat_interleave(restarts)
    box = region.bounding_box()
    width = (box.upper - box.lower).clamp_min(1e-12)
    scaled = ((region.sample(restarts * clauses, generator)[0] - box.lower) / width).requires_grad_(True)
    optimizer = Adam([scaled], lr=options.step_size)
    best = None
    for _ in range(options.steps):
        if deadline is not None and time.monotonic() >= deadline:
            break
        x = box.lower + width * scaled
        outputs = graph.forward_flat(x)
        violation = _clause_violations(spec, x, outputs).gather(1, assigned.unsqueeze(1)).squeeze(1)
        best = _best(x, outputs, violation.detach()) or best  # keep any counterexample already seen
        if best is not None and float(violation.detach().min()) <= -options.margin:
            return best
        (gradient,) = torch.autograd.grad(_hinge_loss(spec, x, outputs, assigned, options.margin), scaled)
        optimizer.step([gradient])
        with torch.no_grad():
            scaled.copy_((region.project((box.lower + width * scaled).unsqueeze(0))[0] - box.lower) / width)
    return best


def _hinge_loss(spec: RegionSpec, inputs: torch.Tensor, outputs: torch.Tensor, assigned: torch.Tensor,
                margin: float) -> torch.Tensor:
    """Sum over each point's clause rows of max(0, row + margin): zero once every row holds with the
    margin. Pushing on all rows at once escapes the plateaus where descending the largest row stalls."""
    total = outputs.new_zeros(())
    for index, clause in enumerate(spec.clauses):
        rows = outputs @ clause.coefficients.T.to(outputs.dtype) - clause.rhs.to(outputs.dtype)
        total = total + (torch.relu(rows + margin).sum(-1) * (assigned == index)).sum()
    if spec.input_constraints is not None:
        constraints = spec.input_constraints
        rows = inputs @ constraints.coefficients.T.to(inputs.dtype) - constraints.rhs.to(inputs.dtype)
        total = total + torch.relu(rows + margin).sum()
    return total


@hookimpl
def verikit_methods(register) -> None:
    register(PGD())
