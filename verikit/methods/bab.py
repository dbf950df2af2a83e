"""`bab`: complete verification by branch and bound (Bunel et al. 2018; Wang et al. 2021).

Input splitting (for low-dimensional inputs, e.g. ACAS Xu's 5): a domain is a sub-box of a region
with the clauses not yet refuted in it. Batches of domains are bounded at once with a bound method;
a clause is refuted in a domain when one of its rows has a positive lower bound. Open domains are
probed for counterexamples (their centres, and PGD on the most promising ones) and split in two along
the input whose gradient-times-width is largest. The answer is `unsat` when no domain is left,
`sat` with a confirmed counterexample, and `timeout` at the deadline, never a guess.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.methods.base import Method, Verdict
from verikit.plugins import get_method
from verikit.region import Box, LpBall
from verikit.spec.property import Property, RegionSpec


@dataclass
class BaBOptions:
    """bound_method: bounds each batch of domains; batch: domains bounded at once; max_inputs: the
    largest input dimension split directly (larger inputs are left `unknown` by this method);
    max_domains: a memory cap on the queue."""

    bound_method: str = "crown"
    batch: int = 512
    max_inputs: int = 16
    max_domains: int = 2_000_000


class BranchAndBound(Method):
    name = "bab"
    kind = "complete"
    summary = "branch and bound over input splits with crown bounds and attacks on open domains"
    Options = BaBOptions
    needs = ("forward", "interval", "backward", "relax")

    def decide(self, graph: Graph, prop: Property, options: BaBOptions | None = None,
               deadline: float | None = None) -> Verdict:
        options = options or BaBOptions()
        deadline = deadline if deadline is not None else time.monotonic() + 60
        if prop.n_inputs > options.max_inputs:
            return Verdict("unknown", method=self.name,
                           detail=f"input splitting handles up to {options.max_inputs} inputs, not {prop.n_inputs}")
        statuses = []
        for spec in prop.regions:
            verdict = _split_inputs(graph, prop, spec, options, deadline)
            if verdict.status == "sat":
                return verdict
            statuses.append(verdict)
            if verdict.status == "timeout":
                return verdict
        if all(v.status == "unsat" for v in statuses):
            return Verdict("unsat", method=self.name, detail="; ".join(v.detail for v in statuses))
        return next(v for v in statuses if v.status != "unsat")


@dataclass
class _Domains:
    """A stack of sub-boxes [D, n] with the clauses still open in each [D, clauses]."""

    lower: torch.Tensor
    upper: torch.Tensor
    open: torch.Tensor

    def __len__(self) -> int:
        return self.lower.shape[0]

    def pop(self, count: int) -> "_Domains":
        taken = _Domains(self.lower[-count:], self.upper[-count:], self.open[-count:])
        self.lower, self.upper, self.open = self.lower[:-count], self.upper[:-count], self.open[:-count]
        return taken

    def push(self, other: "_Domains") -> None:
        self.lower = torch.cat([self.lower, other.lower])
        self.upper = torch.cat([self.upper, other.upper])
        self.open = torch.cat([self.open, other.open])


def _root_box(spec: RegionSpec) -> Box:
    region = spec.region
    if isinstance(region, LpBall) and region.norm != float("inf"):
        raise ValueError("input splitting needs a box or an L-inf ball")
    box = region.bounding_box()
    return Box(box.lower.double(), box.upper.double())


def _split_inputs(graph: Graph, prop: Property, spec: RegionSpec, options: BaBOptions, deadline: float) -> Verdict:
    """Branch and bound over one region's input box."""
    from verikit.verify import confirm

    method = get_method(options.bound_method)
    method_options = _wide_batches(method)
    rows = torch.cat([c.coefficients for c in spec.clauses]).float()
    rhs = torch.cat([c.rhs for c in spec.clauses]).double()
    owner = torch.cat([torch.full((c.coefficients.shape[0],), i) for i, c in enumerate(spec.clauses)])
    root = _root_box(spec)
    queue = _Domains(root.lower, root.upper, torch.ones(1, len(spec.clauses), dtype=torch.bool))
    graph64 = graph.to(torch.float64)
    bounded = 0
    while len(queue):
        if time.monotonic() >= deadline:
            return Verdict("timeout", method="bab", detail=f"{len(queue)} domains open after {bounded} bounded")
        batch = queue.pop(min(options.batch, len(queue)))
        lower_bound = method.bound(graph, Box(batch.lower.float(), batch.upper.float()), rows.unsqueeze(0),
                                   method_options).lower
        bounded += len(batch)
        refuted_rows = (lower_bound.double() - rhs) > 0
        refuted = _clauses_refuted(refuted_rows, owner, batch.open.shape[1])
        batch.open &= ~refuted
        alive = batch.open.any(1)
        batch = _Domains(batch.lower[alive], batch.upper[alive], batch.open[alive])
        if not len(batch):
            continue
        candidate = _probe(graph64, spec, batch)
        if candidate is not None:
            verdict = confirm(graph, prop, candidate, "bab")
            if verdict is not None:
                verdict.detail = f"{bounded} domains bounded"
                return verdict
        if len(queue) + 2 * len(batch) > options.max_domains:
            return Verdict("unknown", method="bab", detail="domain limit reached")
        queue.push(_split(graph64, spec, batch))
    return Verdict("unsat", method="bab", detail=f"{bounded} domains bounded")


def _wide_batches(method: Method):
    """The bound method's default options, without row chunking (domains are already batched)."""
    options = method.default_options()
    if hasattr(options, "batch_rows"):
        options = dataclasses.replace(options, batch_rows=1 << 30)
    return options


def _clauses_refuted(refuted_rows: torch.Tensor, owner: torch.Tensor, clauses: int) -> torch.Tensor:
    """[D, clauses]: a clause is refuted when any of its rows is."""
    result = torch.zeros(refuted_rows.shape[0], clauses, dtype=torch.bool)
    for clause in range(clauses):
        result[:, clause] = refuted_rows[:, owner == clause].any(1)
    return result


def _violation(graph64: Graph, spec: RegionSpec, points: torch.Tensor, open_clauses: torch.Tensor) -> torch.Tensor:
    """Per point, the violation of its best open clause (<= 0: a counterexample candidate)."""
    outputs = graph64.forward_flat(points)
    value = torch.stack([clause.slack(outputs) for clause in spec.clauses], -1)
    if spec.input_constraints is not None:
        value = torch.maximum(value, spec.input_constraints.slack(points).unsqueeze(-1))
    return value.masked_fill(~open_clauses, float("inf")).amin(-1)


def _probe(graph64: Graph, spec: RegionSpec, domains: _Domains):
    """The domain centre with the smallest violation, if it is a counterexample."""
    centers = (domains.lower + domains.upper) / 2
    with torch.no_grad():
        violation = _violation(graph64, spec, centers, domains.open)
    best = int(violation.argmin())
    if float(violation[best]) > 0:
        return None
    with torch.no_grad():
        return centers[best], graph64.forward_flat(centers[best:best + 1])[0]


def _split(graph64: Graph, spec: RegionSpec, domains: _Domains) -> _Domains:
    """Halve every domain along the input with the largest |gradient| x width at its centre."""
    centers = ((domains.lower + domains.upper) / 2).requires_grad_(True)
    violation = _violation(graph64, spec, centers, domains.open)
    (gradient,) = torch.autograd.grad(violation.clamp(max=1e6).sum(), centers)
    width = domains.upper - domains.lower
    score = gradient.abs() * width + 1e-9 * width  # falls back to the widest input where flat
    dimension = score.argmax(1)
    middle = centers.detach().gather(1, dimension.unsqueeze(1)).squeeze(1)
    index = torch.arange(len(domains))
    left_upper, right_lower = domains.upper.clone(), domains.lower.clone()
    left_upper[index, dimension] = middle
    right_lower[index, dimension] = middle
    return _Domains(torch.cat([domains.lower, right_lower]), torch.cat([left_upper, domains.upper]),
                    torch.cat([domains.open, domains.open]))


@hookimpl
def verikit_methods(register) -> None:
    register(BranchAndBound())
