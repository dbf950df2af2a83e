"""Branch and bound over ReLU phases (Bunel et al. 2018/2020; beta-CROWN, Wang et al. 2021), and over
the pieces of any piecewise-linear activation whose rule states its `kinks`.

A domain is the region plus a set of phase decisions: {x in region : z_j(x) >= k_j for the neurons j
split above, z_j(x) <= k_j for those split below}, with z_j the activation's input and k_j a kink of
it inside z_j's interval (0 for a ReLU: active / inactive). A decision is stored
as a fixed intermediate bound (above: lower = max(lower, k); below: upper = min(upper, k)), and
every later layer is re-bounded with all of the domain's bounds kept (backward.layer_bounds'
`reference`; with `ReluSplitOptions.intermediate_steps`, by slopes optimised through those layers,
alpha_crown.tighten_intermediate). This is sound for the sub-domain: at every point of it the
pre-activations lie inside the parent's bounds (the parent contains the domain) and on the decided
sides, so they lie inside the kept intervals; the relaxations built on those intervals hold at every
point of the domain, and back-substitution over the whole region (a superset) bounds the outputs on
the domain. Splitting a neuron cuts a domain into z_j >= k and z_j <= k, which together cover it, so
refuting every leaf refutes the region. A domain whose kept bounds cross (lower > upper) is empty.

Each step takes the hardest open domains (lowest bound), splits each on the neuron of largest
BaBSR-like score (the backward coefficient on the ReLU's output times the intercept -l u / (u - l) of
its upper line: how much that line loosens the bound; times (1 + u)^`looseness_power` for each
ReLU layer after the neuron's, u the share of that layer's neurons unstable in the domain: a split
re-bounds the later layers, and where they are loose an early split tightens them all; divided by
the layer's measured seconds a parent, re-bounding and bounding the children, relative to the
cheapest layer's, as that re-bounding makes early splits dearer), bounds
the children in one batch (one problem per open clause row: slopes optimised by alpha-CROWN, plus
beta-CROWN's multipliers on the sign constraints the domain's bounds imply), drops refuted clauses and
empty domains, and tries the points minimising each row's linear bound (inside the region, so any
violation is a real counterexample) plus a few PGD steps from the most promising ones. A domain with
every ReLU decided is settled by an LP over its bounds (exact there for piecewise-linear nets); one
the LP cannot settle makes the answer `unknown` rather than `unsat` (both in relu_probes.py).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from math import prod

import torch

from verikit.bounds import Interval
from verikit.deadline import DeadlineReached
from verikit.graph import Graph
from verikit.methods.alpha_crown import (AlphaCrownOptions, fold, optimize_folded, tighten_each_neuron,
                                        tighten_intermediate)
from verikit.lp.encode import select_problem
from verikit.methods.bab_pool import POOL_AFTER, WORKER_START, decide_jobs, start_pool
from verikit.methods.relu_probes import attack, solve_leaf
from verikit.propagate.backward import layer_bounds, values_to_relax
from verikit.region import Region
from verikit.spec.property import Property, RegionSpec
from verikit.verdict import Verdict, confirm

DOMAINS_PER_WORKER = 16  # open domains a worker, at least, before the search is shared out ...
SHARES_PER_WORKER = 4  # ... in this many parts a worker (some finish early: the rest keep workers busy)
ROOT_SHARE = 0.25  # of the time left, at most, for tightening the root's neurons one by one
COST_SPREAD = 1.5  # a batch's cost a parent varies with the layers split (up to ~1.4x the last one's)
F32 = torch.float32


@dataclass
class ReluSplitOptions:
    """ReLU splitting's options (a split at a kink of any piecewise-linear activation)."""

    batch: int = 256  # parents split at once
    alpha_steps: int = 20  # alpha-CROWN steps per bounding (1: plain CROWN)
    # Adam steps on slopes shared per child that re-bound the later layers (beta-CROWN's joint
    # optimisation); 0, one plain CROWN pass, is the default: on 2 CPU cores it bounds ~3x fewer
    # domains at ~6x the cost each (benchmarks/README.md)
    intermediate_steps: int = 0
    beta: bool = True  # beta-CROWN's multipliers on the splits at 0
    looseness_power: float = 2.0  # how much the score favours neurons before loose layers (0: BaBSR's)
    split_cost: bool = True  # divide the score by each layer's measured cost of a split there
    max_domains: int = 100_000  # queue cap
    attack_points: int = 16  # PGD starts per batch
    batch_rows: int = 65_536  # rows per backward pass of the intermediate bounds


@dataclass
class _Layer:
    """The input value of one piecewise-linear node (a rule with `kinks`: ReLU, LeakyReLU, a plugin's
    Clip), its output value, its slice of the global neuron index, and the rule."""

    value: str
    output: str
    offset: int
    size: int
    position: int  # index of the producing node in graph.nodes
    rule: object

    def split_points(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Per neuron, the kink inside (lower, upper) nearest its middle (a split there cuts the interval
        into two pieces, each nearer exact); NaN where none is inside."""
        kinks = torch.tensor(self.rule.kinks, dtype=lower.dtype, device=lower.device)
        inside = (lower.unsqueeze(-1) < kinks) & (upper.unsqueeze(-1) > kinks)
        distance = (kinks - ((lower + upper) / 2).unsqueeze(-1)).abs().masked_fill(~inside, float("inf"))
        chosen = kinks[distance.argmin(-1)]
        return torch.where(inside.any(-1), chosen, torch.full_like(chosen, float("nan")))

    def looseness(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """How far the adaptive upper line lies above the function at the split point (for a ReLU, the
        intercept -l u / (u - l) of BaBSR's score); 0 where no kink is inside."""
        point = self.split_points(lower, upper)
        lines = self.rule.relax(Interval(lower, upper), "adaptive")
        at = torch.nan_to_num(point)
        gap = lines.upper_slope * at + lines.upper_intercept - self.rule.forward(at)
        return torch.where(torch.isnan(point), torch.zeros_like(gap), gap.clamp_min(0))


@dataclass
class _Domains:
    """A batch of domains: kept bounds per relaxed value [D, *shape], open clauses [D, C], the lowest
    open-clause margin (priority), and the global index of the neuron each one splits next."""

    bounds: dict[str, Interval]
    open: torch.Tensor
    priority: torch.Tensor
    branch: torch.Tensor

    def __len__(self) -> int:
        return self.open.shape[0]

    def select(self, index: torch.Tensor) -> "_Domains":
        return _Domains({k: Interval(v.lower[index], v.upper[index]) for k, v in self.bounds.items()},
                        self.open[index], self.priority[index], self.branch[index])

    def deal(self, count: int) -> list["_Domains"]:
        """At most `count` parts, dealt in priority order like cards, so each gets hard and easy ones."""
        order = self.priority.argsort()
        return [self.select(order[start::count]) for start in range(min(count, len(self)))]

    @staticmethod
    def concat(parts: list["_Domains"]) -> "_Domains":
        bounds = {k: Interval(torch.cat([p.bounds[k].lower for p in parts]),
                              torch.cat([p.bounds[k].upper for p in parts])) for k in parts[0].bounds}
        return _Domains(bounds, torch.cat([p.open for p in parts]), torch.cat([p.priority for p in parts]),
                        torch.cat([p.branch for p in parts]))


@dataclass
class _Outcome:
    """What bounding a batch of children gave: the domains still open, how many were stuck (open
    with no unstable ReLU left), and counterexample candidates (flat x, y)."""

    domains: _Domains | None
    stuck: int
    candidates: list[tuple[torch.Tensor, torch.Tensor]]


def split_relus(graph: Graph, prop: Property, spec: RegionSpec, options, deadline: float) -> Verdict:
    """Decide one region by ReLU splitting (options: BaBOptions, whose `relu` holds ReLU splitting's); sat only with a
    counterexample that verify.confirm accepts. With `options.workers` > 1, the open domains are
    shared out to worker processes once there are a few per worker and the search has gone on alone
    for POOL_AFTER seconds (bab_pool.py)."""
    if any(clause.coefficients.shape[0] == 0 for clause in spec.clauses):  # no row: the whole region is unsafe
        center = spec.region.project(spec.region.bounding_box().center.unsqueeze(1))[0, 0].double()
        with torch.no_grad():
            point = (center, graph.to(torch.float64).forward_flat(center[None])[0])
        found = confirm(graph, prop, point, "bab")
        return found or Verdict("unknown", method="bab", detail="a clause without rows")
    problem = _Problem(graph, spec, options, deadline, options.device)
    if not problem.layers:  # nothing to split: the root's bound (every neuron tightened) is all there is
        return problem.root_without_splits()
    workers = options.workers
    if workers <= 1:
        return _search(problem, prop, problem.root(), options, deadline)
    share_at = DOMAINS_PER_WORKER * workers
    found = _search(problem, prop, problem.root(), options, deadline, share_at, time.monotonic() + POOL_AFTER)
    if isinstance(found, Verdict):
        return found
    with start_pool(workers) as pool:  # the workers import torch while this process searches on
        found = _search(problem, prop, _Outcome(*found, []), options, deadline, share_at,
                        time.monotonic() + WORKER_START)
        if isinstance(found, Verdict):
            return found
        queue, stuck = found
        single = dataclasses.replace(options, workers=1)
        jobs = [functools.partial(_continue, graph, prop, spec, single, deadline, piece, stuck if i == 0 else 0,
                                  problem.seconds_per_parent)
                for i, piece in enumerate(queue.deal(SHARES_PER_WORKER * workers))]
        return decide_jobs(pool, jobs, workers)


def _continue(graph: Graph, prop: Property, spec: RegionSpec, options, deadline: float, domains: "_Domains",
              stuck: int, seconds_per_parent: float = 0.0) -> Verdict:
    """A worker's share of a search: decide the given open domains of the region (its first batch sized
    to the deadline by the sharing search's last cost a parent)."""
    problem = _Problem(graph, spec, options, deadline, options.device)
    problem.seconds_per_parent = seconds_per_parent
    return _search(problem, prop, _Outcome(domains, stuck, []), options, deadline)


def _search(problem: "_Problem", prop: Property, outcome: "_Outcome", options, deadline: float,
            share_at: int | None = None, share_after: float = 0.0) -> "Verdict | tuple[_Domains, int]":
    """The branch-and-bound loop from a first outcome: the verdict, or, once `share_at` domains are
    open and the clock has passed `share_after`, the open domains and the count of stuck ones (for the
    caller to share out)."""
    queue, stuck, bounded = outcome.domains, outcome.stuck, 1
    while True:
        for candidate in outcome.candidates:
            if verdict := confirm(problem.graph64, prop, candidate, "bab"):
                verdict.detail = f"ReLU splitting: {bounded} domains bounded"
                return verdict
        if queue is None or not len(queue):
            break
        if share_at is not None and len(queue) >= share_at and time.monotonic() >= share_after:
            return queue, stuck
        # parents bounded in the time left, if they cost COST_SPREAD times the last batch's a parent
        fits = (deadline - time.monotonic()) / max(COST_SPREAD * problem.seconds_per_parent, 1e-9)
        if fits < 1:
            detail = f"{len(queue)} ReLU domains open after {bounded} bounded"
            return Verdict("timeout", method="bab", detail=detail)
        if len(queue) > options.relu.max_domains:
            return Verdict("unknown", method="bab", detail=f"ReLU domain limit {options.relu.max_domains} reached")
        started = time.monotonic()
        hardest = queue.priority.argsort()[: min(options.relu.batch, int(fits))]
        rest = torch.ones(len(queue), dtype=torch.bool, device=queue.open.device)
        rest[hardest] = False
        parents, queue = queue.select(hardest), queue.select(rest.nonzero()[:, 0])
        try:
            outcome = problem.bound_children(parents)
        except DeadlineReached:  # the instance's deadline, inside a pass: say how far the search got
            detail = f"{len(queue) + len(parents)} ReLU domains open after {bounded} bounded"
            return Verdict("timeout", method="bab", detail=detail)
        bounded += 2 * len(parents)
        problem.seconds_per_parent = (time.monotonic() - started) / len(parents)
        stuck += outcome.stuck
        if outcome.domains is not None:
            queue = _Domains.concat([queue, outcome.domains])
    if stuck:
        return Verdict("unknown", method="bab", detail=f"{stuck} domains open with every ReLU decided")
    return Verdict("unsat", method="bab", detail=f"ReLU splitting: {bounded} domains bounded")


class _Problem:
    """One region's branch and bound: the graph in float32 on `device` (where the domains are bounded)
    and in float64 on the CPU (attacks, LP leaves), the clause rows, the ReLU layout."""

    def __init__(self, graph: Graph, spec: RegionSpec, options, deadline: float | None = None,
                 device: str = "cpu"):
        self.device = torch.device(device)
        self.graph, self.graph64, self.spec = graph.to(F32, self.device), graph.to(torch.float64), spec
        self.region = spec.region.to(F32, self.device)
        rows, rhs, owner = spec.rows()
        self.rows, self.rhs = rows.to(self.device, F32), rhs.to(self.device, F32)
        self.owner = owner.to(self.device)
        self.alpha, self.deadline = AlphaCrownOptions(steps=options.relu.alpha_steps), deadline
        self.intermediate = dataclasses.replace(self.alpha, steps=options.relu.intermediate_steps,
                                                batch_rows=options.relu.batch_rows)
        self.attack_points, self.batch_rows = options.relu.attack_points, options.relu.batch_rows
        self.beta, self.looseness_power = options.relu.beta, options.relu.looseness_power
        self.relaxed = values_to_relax(self.graph)
        self.layers = _relu_layers(self.graph)
        self.costs = _SplitCosts(len(self.layers), options.relu.split_cost)
        self.seconds_per_parent = 0.0  # the last batch's, which sizes the next to the deadline
        self.positions = {node.output: i for i, node in enumerate(self.graph.nodes)}

    def root(self) -> _Outcome:
        """Bound the whole region and choose its first split."""
        open_clauses = torch.ones(1, len(self.spec.clauses), dtype=torch.bool, device=self.device)
        return self._finish(self._root_bounds(), open_clauses)

    def root_without_splits(self) -> Verdict:
        """A net with no ReLU to split (sigmoid, tanh): `unsat` when the root's bound refutes every
        clause, else `unknown`; a counterexample is never claimed here (the attacks look for those)."""
        bounds = self._root_bounds(share=1.0)
        domain, row = torch.zeros(len(self.rows), dtype=torch.long, device=self.device), torch.arange(len(self.rows))
        margin, _, _ = self._margins(bounds, self.region, domain, row.to(self.device))
        refuted = torch.zeros(len(self.spec.clauses), dtype=torch.bool, device=self.device)
        refuted[self.owner[margin > 0]] = True
        if bool(refuted.all()):
            return Verdict("unsat", method="bab", detail="no ReLU to split: the root bound, every neuron tightened")
        return Verdict("unknown", method="bab",
                       detail=f"no ReLU to split; {int((~refuted).sum())} clause(s) not refuted at the root")

    def _root_bounds(self, share: float = ROOT_SHARE) -> dict[str, Interval]:
        """The region's intermediate bounds, tightened with shared slopes, then neuron by neuron (every
        domain inherits them) for at most `share` of the time left."""
        rows = self.rows.unsqueeze(0).reshape(1, len(self.rows), *self.graph.output_shape)
        with torch.no_grad():
            bounds = layer_bounds(self.graph, self.region, "adaptive", {}, batch_rows=self.batch_rows)
        bounds, _ = tighten_intermediate(self.graph, self.region, rows, bounds,
                                         dataclasses.replace(self.alpha, steps=20), deadline=self.deadline)
        deadline = self.deadline
        if deadline is not None:
            deadline = time.monotonic() + share * (deadline - time.monotonic())
        return tighten_each_neuron(self.graph, self.region, bounds, dataclasses.replace(self.alpha, steps=20),
                                   deadline)

    def bound_children(self, parents: _Domains) -> _Outcome:
        """Split every parent on its chosen neuron and bound the children (the intermediate bounds
        grouped by the split layer, as the layers before it keep theirs; the rows all at once)."""
        groups, open_clauses = [], []
        for index, layer in enumerate(self.layers):
            chosen = (parents.branch >= layer.offset) & (parents.branch < layer.offset + layer.size)
            if bool(chosen.any()):
                group, started = parents.select(chosen.nonzero()[:, 0]), self._clock()
                groups.append(self._split_and_rebound(group, layer))
                self.costs.rebound(index, (self._clock() - started) / len(group))
                open_clauses += [group.open, group.open]
        bounds = {name: Interval(torch.cat([g[name].lower for g in groups]),
                                 torch.cat([g[name].upper for g in groups])) for name in self.relaxed}
        region = self.region.select(torch.zeros(2 * len(parents), dtype=torch.long, device=self.device))
        started = self._clock()
        outcome = self._finish(bounds, torch.cat(open_clauses), region)
        self.costs.finish((self._clock() - started) / len(parents))
        return outcome

    def _clock(self) -> float:
        """Seconds now, once the device has finished the work queued (a GPU runs it asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.monotonic()

    def _split_and_rebound(self, parents: _Domains, layer: _Layer) -> dict[str, Interval]:
        """The bounds of the children of parents that all split a neuron of `layer`: first every
        parent's active child, then every inactive one."""
        count, local = len(parents), parents.branch - layer.offset
        index = torch.arange(count, device=self.device)
        reference = {}
        for name, bound in parents.bounds.items():
            lower, upper = (torch.cat([t, t]) for t in (bound.lower, bound.upper))
            if name == layer.value:
                shape = lower.shape
                lower, upper = lower.flatten(1).clone(), upper.flatten(1).clone()
                point = layer.split_points(lower[index, local], upper[index, local])
                lower[index, local] = torch.maximum(lower[index, local], point)  # above the kink: z >= k
                upper[count + index, local] = torch.minimum(upper[count + index, local], point)  # below: z <= k
                lower, upper = lower.reshape(shape), upper.reshape(shape)
            reference[name] = Interval(lower, upper)
        known = {k: v for k, v in reference.items() if self.positions.get(k, -1) <= layer.position}
        region = self.region.select(torch.zeros(2 * count, dtype=torch.long, device=self.device))
        with torch.no_grad():
            bounds = layer_bounds(self.graph, region, "adaptive", known, batch_rows=self.batch_rows,
                                  reference=reference, skip_stable=True)
        if self.intermediate.steps:  # slopes shared per child, optimised through the later layers' bounds
            rows = self.rows.expand(2 * count, *self.rows.shape)
            bounds, _ = tighten_intermediate(self.graph, region, rows, bounds, self.intermediate, known=known,
                                             skip_stable=True, deadline=self.deadline)
        return {name: bounds[name] for name in self.relaxed}

    def _finish(self, bounds: dict[str, Interval], open_clauses: torch.Tensor, region: Region | None = None,
                ) -> _Outcome:
        """Bound the open clause rows of each domain, drop what is refuted, look for counterexamples
        and choose the next split of what is left (a domain with none left goes to the LP)."""
        open_clauses = open_clauses & _feasible(bounds, self.relaxed).unsqueeze(1)
        domain, row = open_clauses[:, self.owner].nonzero(as_tuple=True)
        if not len(domain):
            return _Outcome(None, 0, [])
        region = region if region is not None else self.region
        margin, record, folded_bounds = self._margins(bounds, region, domain, row)
        refuted = torch.zeros_like(open_clauses)
        refuted[domain[margin > 0], self.owner[row[margin > 0]]] = True
        open_clauses = open_clauses & ~refuted
        live = open_clauses[domain, self.owner[row]]  # pairs whose clause is still open
        candidates = attack(self.graph64, self.spec, record[self.graph.input_name], margin, live,
                            self.attack_points)
        if not bool(open_clauses.any()):
            return _Outcome(None, 0, candidates)
        best, branch = self._branch_scores(bounds, folded_bounds, record, domain, live, len(open_clauses)).max(1)
        leaves = (open_clauses.any(1) & (best == float("-inf"))).nonzero()[:, 0]
        for leaf in leaves.tolist():
            still_open, points = solve_leaf(self.graph64, self.spec, select_problem(bounds, leaf),
                                            open_clauses[leaf].cpu())
            open_clauses[leaf] = still_open.to(self.device)
            candidates += points
        keep = (open_clauses.any(1) & (best > float("-inf"))).nonzero()[:, 0]
        priority = self._priority(margin, domain, row, open_clauses)
        stored = {name: Interval(*(t.expand(len(open_clauses), *t.shape[1:]) for t in (bounds[name].lower,
                                                                                       bounds[name].upper)))
                  for name in self.relaxed}
        domains = _Domains(stored, open_clauses, priority, branch).select(keep)
        return _Outcome(domains if len(domains) else None, int(open_clauses[leaves].any(1).sum()), candidates)

    def _margins(self, bounds: dict[str, Interval], region: Region, domain: torch.Tensor, row: torch.Tensor):
        """Lower bound minus right-hand side of each (domain, row) pair, slopes (and betas) optimised;
        also the backward coefficients at the best step and the bounds folded per pair."""
        folded_region, folded_bounds = fold(self.graph, region, bounds, domain)
        rows = self.rows[row].reshape(len(row), 1, *self.graph.output_shape)
        signs = {layer.value: _signs(folded_bounds[layer.value]) for layer in self.layers
                 if layer.rule.kinks == (0.0,)} if self.beta else None  # beta-CROWN's terms: splits at 0
        record: dict[str, torch.Tensor] = {}
        lower = optimize_folded(self.graph, folded_region, rows, folded_bounds, self.alpha, record, signs,
                                stop_at=self.rhs[row], deadline=self.deadline)
        return lower - self.rhs[row], record, folded_bounds

    def _branch_scores(self, bounds, folded_bounds, record, domain, live, count) -> torch.Tensor:
        """[D, neurons]: summed over each domain's open rows, the coefficient on every unstable neuron's
        output times its upper line's looseness at the split point (a ReLU's intercept -l u / (u - l)),
        times (1 + unstable share)^power of every split layer after the neuron's (a split re-bounds
        those layers), over its layer's relative cost of a split (self.costs); -inf where stable."""
        parts = []
        for layer in self.layers:
            folded = folded_bounds[layer.value]
            lower, upper = folded.lower.flatten(1), folded.upper.flatten(1)
            coefficient = record[layer.output].flatten(2)[:, 0] * live.unsqueeze(1)
            intercept = layer.looseness(lower, upper)
            per_pair = coefficient.clamp(min=0) * intercept + 1e-6 * coefficient.abs() * intercept
            score = per_pair.new_zeros(count, layer.size).index_add_(0, domain, per_pair)
            whole = bounds[layer.value]
            stable = (~layer.rule.unstable(whole)).flatten(1).expand(count, -1)
            parts.append(score.masked_fill(stable, float("-inf")))
        weight, relative_cost = parts[0].new_ones(count, 1), self.costs.relative()
        for index in range(len(parts) - 1, -1, -1):  # from the last layer back: the looseness after each
            unstable_share = torch.isfinite(parts[index]).float().mean(1, keepdim=True)
            parts[index] = parts[index] * weight / relative_cost[index]
            weight = weight * (1 + unstable_share) ** self.looseness_power
        return torch.cat(parts, dim=1)

    def _priority(self, margin, domain, row, open_clauses) -> torch.Tensor:
        """Per domain, the margin of its worst open clause (a clause's margin: its best row's)."""
        count, clauses = open_clauses.shape
        flat = torch.full((count * clauses,), float("-inf"), dtype=margin.dtype, device=self.device)
        flat.scatter_reduce_(0, domain * clauses + self.owner[row], margin.detach(), "amax")
        return flat.reshape(count, clauses).masked_fill(~open_clauses, float("inf")).amin(1)


class _SplitCosts:
    """Seconds a parent, averaged as the search goes: re-bounding the later layers after a split in
    each ReLU layer, and bounding the children. A split's score is divided by its layer's share, so an
    early split (which re-bounds more) must promise more; layers not yet split count as the cheapest
    measured one (tried, then measured). All ones while `enabled` is False or nothing is measured."""

    def __init__(self, layers: int, enabled: bool, smoothing: float = 0.3):
        self.seconds: list[float | None] = [None] * layers
        self.children: float | None = None
        self.enabled, self.smoothing = enabled, smoothing

    def _average(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.smoothing) * old + self.smoothing * new

    def rebound(self, layer: int, seconds: float) -> None:
        self.seconds[layer] = self._average(self.seconds[layer], seconds)

    def finish(self, seconds: float) -> None:
        self.children = self._average(self.children, seconds)

    def relative(self) -> list[float]:
        measured = [s for s in self.seconds if s is not None]
        if not self.enabled or not measured or self.children is None:
            return [1.0] * len(self.seconds)
        cost = [(s if s is not None else min(measured)) + self.children for s in self.seconds]
        return [c / min(cost) for c in cost]


def _relu_layers(graph: Graph) -> list[_Layer]:
    """Every input value of a piecewise-linear node (a rule with kinks) that can be split (not the graph
    input itself), in order."""
    positions = {node.output: i for i, node in enumerate(graph.nodes)}
    layers, offset = [], 0
    for node in graph.nodes:
        value = node.inputs[0] if node.inputs else None
        if node.rule.kinks and value in positions and all(l.value != value for l in layers):
            size = prod(graph.shapes[value])
            layers.append(_Layer(value, node.output, offset, size, positions[value], node.rule))
            offset += size
    return layers


def _feasible(bounds: dict[str, Interval], names: list[str]) -> torch.Tensor:
    """[D]: False where some kept interval is empty (lower above upper beyond rounding): no point there."""
    feasible = None
    for name in names:
        widened = bounds[name].widened()
        empty = (widened.lower > widened.upper).flatten(1).any(1)
        feasible = ~empty if feasible is None else feasible & ~empty
    return feasible


def _signs(bound: Interval) -> torch.Tensor:
    """+1 where a value is known non-negative, -1 where known non-positive, 0 elsewhere."""
    negative = (bound.upper <= 0) & (bound.lower < 0)
    return (bound.lower >= 0).to(bound.lower.dtype) - negative.to(bound.lower.dtype)
