"""`pgd`: projected gradient attack on the property's margin (Madry et al. 2018), with random restarts.

For each region it minimises, from many starting points, the violation of each unsafe clause (the
largest `c . y - d` over the clause's rows, plus any input-constraint excess): a point with
violation <= 0 inside the region is a counterexample. Every iterate is projected back into the region.
The descent runs in float32 (cheap on conv nets) from the region's centre and random starts, in
batches sized to the net's measured cost a point; every region gets its share of the time; each
candidate is re-checked in float64 and returned only past a small margin, so onnxruntime's float32
re-check agrees.
"""
from __future__ import annotations

import dataclasses
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
    """restarts: starting points per clause (at most max_points in all, fewer where a step over them
    would cost more than step_seconds); steps: Adam steps of step_size x the region's width, in rounds
    of fresh starts until the deadline when `rounds` > 1; samples: random points tried first (fewer on
    costly nets); dtype: the descent's precision (float32 is ~3x cheaper on conv nets; every candidate
    is re-checked in float64 before it is returned)."""

    restarts: int = 64
    max_points: int = 512
    steps: int = 100
    step_size: float = 0.1
    samples: int = 2048
    margin: float = 1e-5  # aim this far past the boundary, so onnxruntime's float32 re-check agrees
    dtype: str = "float32"
    step_seconds: float = 0.05
    rounds: int = 1


STRONG = {"restarts": 4096, "max_points": 4096, "steps": 50, "step_seconds": 0.025}  # `escalated`'s changes


class PGD(Method):
    name = "pgd"
    kind = "attack"
    summary = "projected gradient attack on the spec margin, random restarts (Madry et al. 2018)"
    Options = PGDOptions
    needs = ("forward",)

    def attack(self, graph: Graph, prop: Property, options: PGDOptions | None = None,
               deadline: float | None = None, seed: int = 0):
        options = options or PGDOptions()
        generator = torch.Generator().manual_seed(seed)
        attacker = _Attacker(graph, prop.n_inputs, options, deadline)
        for spec in prop.regions:  # sampling first, in every region: it is cheap
            if (found := attacker.sample(spec, generator)) is not None or attacker.expired():
                return found
        for position, spec in enumerate(prop.regions):  # then the descent, each region its share of the time
            if deadline is not None:
                attacker.deadline = time.monotonic() + (deadline - time.monotonic()) / (len(prop.regions) - position)
            if (found := attacker.descend(spec, generator)) is not None:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                break
        return None

    def escalated(self, options: PGDOptions) -> PGDOptions:
        """Many more restarts, each batch one step over all starts: rare counterexamples need thousands."""
        return dataclasses.replace(options, **STRONG)


def seconds_per_point(graph: Graph, inputs: int, dtype: torch.dtype = torch.float32) -> float:
    """Measured seconds of one forward and backward pass per input point in `dtype` (weight counts
    misjudge convolutions, whose weights are reused at every position): 16 points, then 512 where
    those were too quick to time (small nets, where per-call overhead would dominate). Measured once
    per model file and dtype."""
    if not graph.source:
        return _measure(graph.to(dtype), inputs, dtype)
    key = (graph.source, inputs, dtype)
    if key not in _COSTS:
        _COSTS[key] = _measure(graph.to(dtype), inputs, dtype)
    return _COSTS[key]


_COSTS: dict[tuple, float] = {}


def _measure(graph: Graph, inputs: int, dtype: torch.dtype) -> float:
    for points in (16, 512):
        x = torch.rand(points, inputs, dtype=dtype, requires_grad=True)
        started = time.perf_counter()
        torch.autograd.grad(graph.forward_flat(x).sum(), x)
        seconds = time.perf_counter() - started
        if seconds > 0.05:
            break
    return max(1e-9, seconds / points)


class _Attacker:
    """One attack's graphs (the descent's precision and float64 for the final check), its deadline,
    and the number of points a step may take (sized to the net's measured cost)."""

    def __init__(self, graph: Graph, inputs: int, options: PGDOptions, deadline: float | None):
        dtype = getattr(torch, options.dtype)
        self.graph, self.graph64 = graph.to(dtype), graph.to(torch.float64)
        self.options, self.deadline, self.dtype = options, deadline, dtype
        per_point = seconds_per_point(graph, inputs, dtype)
        self.points = max(8, min(options.max_points, int(options.step_seconds / per_point)))
        self.samples = max(64, min(options.samples, 4 * self.points))

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def sample(self, spec: RegionSpec, generator: torch.Generator):
        """The region's centre and `samples` uniform points, in batches of the step's size, the
        violating ones re-checked in float64."""
        region = spec.region.to(torch.float64)
        points = torch.cat([_center(region), region.sample(self.samples, generator)[0]])
        for batch in points.split(4 * self.points):
            if self.expired():
                break
            with torch.no_grad():
                violation = _clause_violations(spec, batch, self.graph.forward_flat(batch.to(self.dtype))).amin(-1)
            close = violation <= self.options.margin
            if bool(close.any()) and (found := _checked(self.graph64, spec, batch[close])) is not None:
                return found
        return None

    def descend(self, spec: RegionSpec, generator: torch.Generator):
        """Adam on every clause's hinge loss, in coordinates scaled to the region's bounding box,
        projecting back into the region after every step. Each round starts from the centre for every
        clause (a signed-gradient step from there finds most counterexamples of a small box) and random
        points, more of them for the clauses closest to violated at the centre."""
        region = spec.region.to(self.dtype)
        box = region.bounding_box()
        width = (box.upper - box.lower).clamp_min(1e-12)
        for _ in range(max(1, self.options.rounds)):
            starts, assigned = self._starts(spec, region, generator)
            found = self._round(spec, region, box.lower, width, starts, assigned)
            if found is not None or self.expired():
                return found
        return None

    def _starts(self, spec: RegionSpec, region, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Start points and the clause each one descends: the centre once per clause, then random starts
        dealt to the clauses in order of their violation at the centre (the smallest first)."""
        clauses = len(spec.clauses)
        center = _center(region.to(torch.float64)).to(self.dtype)
        with torch.no_grad():
            order = _clause_violations(spec, center, self.graph.forward_flat(center))[0].argsort()
        spare = max(0, self.points - clauses)  # random starts: an even share, the rest to the closest
        per_clause = min(self.options.restarts, spare // clauses)
        left = min(spare - per_clause * clauses, (self.options.restarts - per_clause) * clauses)
        counts = torch.full((clauses,), per_clause)
        counts[order] += left // clauses + (torch.arange(clauses) < left % clauses).long()
        assigned = torch.cat([torch.arange(clauses), torch.repeat_interleave(torch.arange(clauses), counts)])
        random = region.sample(int(counts.sum()), generator)[0]
        return torch.cat([center.expand(clauses, -1), random]), assigned

    def _round(self, spec: RegionSpec, region, lower: torch.Tensor, width: torch.Tensor, starts: torch.Tensor,
               assigned: torch.Tensor):
        options = self.options
        scaled = ((starts - lower) / width).requires_grad_(True)
        optimizer = Adam([scaled], lr=options.step_size)
        best = None  # a float64 counterexample closer to the boundary than the margin, kept in case
        for _ in range(options.steps):
            if self.expired():
                break
            x = lower + width * scaled
            outputs = self.graph.forward_flat(x)
            violation = _clause_violations(spec, x, outputs).gather(1, assigned.unsqueeze(1)).squeeze(1)
            close = violation.detach() <= options.margin  # candidates: re-checked in float64
            if bool(close.any()):
                found = _checked(self.graph64, spec, x.detach()[close].double(), options.margin)
                if found is not None and found[2] <= -options.margin:
                    return found[:2]
                best = found[:2] if found is not None else best
            (gradient,) = torch.autograd.grad(_hinge_loss(spec, x, outputs, assigned, options.margin), scaled)
            optimizer.step([gradient])
            with torch.no_grad():
                scaled.copy_((region.project((lower + width * scaled).unsqueeze(0))[0] - lower) / width)
        return best


def _clause_violations(spec: RegionSpec, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """[points, clauses] violation of each clause (<= 0 means satisfied)."""
    columns = [clause.slack(outputs) for clause in spec.clauses]
    value = torch.stack(columns, -1)
    if spec.input_constraints is not None:
        value = torch.maximum(value, spec.input_constraints.slack(inputs).unsqueeze(-1))
    return value


def _checked(graph64: Graph, spec: RegionSpec, points: torch.Tensor, margin: float | None = None):
    """The most violating of float64 `points` with its output, if it violates the spec in float64
    (with `margin`, also how far: the triple (x, y, violation))."""
    with torch.no_grad():
        outputs = graph64.forward_flat(points)
    violation = _clause_violations(spec, points, outputs).min(-1).values
    index = int(violation.argmin())
    if float(violation[index]) > 0:
        return None
    found = points[index].detach(), outputs[index].detach()
    return found if margin is None else (*found, float(violation[index]))


def _center(region) -> torch.Tensor:
    return region.center if isinstance(region, Box) else region.project(region.center.unsqueeze(1))[0]


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
