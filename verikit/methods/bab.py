"""`bab`: complete verification by branch and bound (Bunel et al. 2018; Wang et al. 2021).

Inputs with more than `max_inputs` dimensions are split by ReLU phases (verikit.methods.relu_split).
Input splitting (for low-dimensional inputs, e.g. ACAS Xu's 5): a domain is a sub-box of a region
with the clauses not yet refuted in it. Batches of domains are bounded at once with a bound method
(crown: intermediate bounds by forward mode, verikit.propagate.forward, then back-substitution only
for the neurons those leave unstable, then the clause rows by back-substitution); a clause is refuted
in a domain when one of its rows has a positive lower bound. Open domains are probed for
counterexamples (their centres, and signed gradient steps from the most promising ones) and split in
two along the input whose width costs the bound most: minus the gradient of the most promising row's
bound in that input's radius, through the forward-mode intermediate bounds, so an input that only
loosens relaxations upstream is split too (the plain "sb" score, |row coefficient| x width, misses it
and split one ACAS Xu input 15 times while another stayed at half its width). The answer is `unsat`
when no domain is left, `sat` with a confirmed counterexample, and `timeout` at the deadline, never a
guess. `device="cuda"` bounds the domains on a GPU.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field

import torch

from verikit.deadline import DeadlineReached
from verikit.graph import Graph
from verikit.hookspecs import hookimpl
from verikit.methods.bab_pool import POOL_AFTER, decide_in_pool, run_job, start_pool
from verikit.methods.base import Method
from verikit.methods.relu_split import ReluSplitOptions, split_relus
from verikit.plugins import get_method
from verikit.propagate.backward import backward_bound, compute_bounds, layer_bounds, values_to_relax
from verikit.propagate.forward import bounds_by_forward_mode, supports_forward_mode
from verikit.region import Box, LpBall
from verikit.spec.property import Property, RegionSpec
from verikit.verdict import Verdict, confirm

PART_SECONDS = 2.0  # input splitting in a pool: a part's time in a round before its open boxes go back ...
ROUND_PARTS = 4  # ... and the parts a worker in a round, after which they are dealt again

@dataclass
class InputSplitOptions:
    """Input splitting's options: the bound method of each batch of sub-boxes, the sub-boxes bounded at
    once (None: 1024 on the CPU, 16384 on a GPU), and a memory cap on the open ones."""

    bound_method: str = "crown"
    batch: int | None = None
    max_domains: int = 2_000_000


@dataclass
class BaBOptions:
    """max_inputs: the largest input dimension split directly (input splitting, `inputs`); larger inputs
    go to ReLU splitting (`relu`, relu_split.py). device and workers (`decide`'s arguments where given,
    which verify passes) carry to the search's parts: device is where the domains are bounded ("cuda"
    for a GPU; attacks and LP leaves run on the CPU); workers are processes that decide pieces of the
    property at once (input splitting: the open sub-boxes, dealt again round after round,
    `_split_inputs_in_rounds`; ReLU splitting: the regions, or one region's open domains once the
    search has a few per worker, verikit.methods.bab_pool)."""

    max_inputs: int = 16
    inputs: InputSplitOptions = field(default_factory=InputSplitOptions)
    relu: ReluSplitOptions = field(default_factory=ReluSplitOptions)
    device: str = "cpu"
    workers: int = 1


class BranchAndBound(Method):
    name = "bab"
    kind = "complete"
    summary = "branch and bound over input splits (small inputs) or ReLU splits, with attacks on open domains"
    Options = BaBOptions
    needs = ("forward", "interval", "backward", "relax")

    def decide(self, graph: Graph, prop: Property, options: BaBOptions | None = None,
               deadline: float | None = None, device: str | None = None, workers: int | None = None) -> Verdict:
        options = options or BaBOptions()
        given = {"device": device, "workers": workers}
        options = dataclasses.replace(options, **{key: value for key, value in given.items() if value is not None})
        deadline = deadline if deadline is not None else time.monotonic() + 60
        split = _split_inputs if prop.n_inputs <= options.max_inputs else split_relus
        if options.workers > 1 and split is _split_inputs and all(_boxed(spec) for spec in prop.regions):
            return _split_inputs_in_rounds(graph, prop, options, deadline)
        if options.workers > 1 and len(prop.regions) > 1:
            return decide_in_pool(graph, prop, list(prop.regions), split, options, deadline)
        statuses = []
        for spec in prop.regions:
            verdict = split(graph, prop, spec, options, deadline)
            if verdict.status == "sat":
                return verdict
            statuses.append(verdict)
            if verdict.status == "timeout":
                return verdict
        if all(v.status == "unsat" for v in statuses):
            return Verdict("unsat", method=self.name, detail="; ".join(v.detail for v in statuses))
        return next(v for v in statuses if v.status != "unsat")


@dataclass
class _Boxes:
    """A stack of sub-boxes [D, n] with the clauses still open in each [D, clauses], and the count of
    point-like boxes left open that cannot be halved (`_split`): while any is, the answer is not unsat."""

    lower: torch.Tensor
    upper: torch.Tensor
    open: torch.Tensor
    stuck: int = 0

    def __len__(self) -> int:
        return self.lower.shape[0]

    def pop(self, count: int) -> "_Boxes":
        taken = _Boxes(self.lower[-count:], self.upper[-count:], self.open[-count:])
        self.lower, self.upper, self.open = self.lower[:-count], self.upper[:-count], self.open[:-count]
        return taken

    def deal(self, count: int) -> list["_Boxes"]:
        """At most `count` parts, dealt like cards: the most recently split boxes (the end of the stack,
        where the hard corners are) spread over every part."""
        return [_Boxes(self.lower[i::count], self.upper[i::count], self.open[i::count],
                         self.stuck if i == 0 else 0) for i in range(min(count, len(self)))]

    def push(self, other: "_Boxes") -> None:
        self.lower = torch.cat([self.lower, other.lower])
        self.upper = torch.cat([self.upper, other.upper])
        self.open = torch.cat([self.open, other.open])
        self.stuck += other.stuck


def _boxed(spec: RegionSpec) -> bool:
    """Whether the region is a box (or an L-inf ball, one): input splitting's domains are sub-boxes."""
    region = spec.region
    return isinstance(region, Box) or (isinstance(region, LpBall) and region.norm == float("inf"))


def _root_box(spec: RegionSpec) -> Box:
    if not _boxed(spec):
        raise ValueError("input splitting needs a box or an L-inf ball")
    box = spec.region.bounding_box()
    return Box(box.lower.double(), box.upper.double())


def _split_inputs(graph: Graph, prop: Property, spec: RegionSpec, options: BaBOptions, deadline: float,
                  start: "_Boxes | None" = None, until: float | None = None) -> "Verdict | _Boxes":
    """Branch and bound over one region's input box, or over the open sub-boxes `start`; with `until`,
    the sub-boxes still open at that time (or, at the end, none but the stuck ones' count) come back
    instead of a verdict (for a pool to re-deal)."""
    bounder = _RowBounder(graph, spec, get_method(options.inputs.bound_method), options.device)
    root = _root_box(spec)
    queue = start if start is not None else _Boxes(root.lower, root.upper,
                                                     torch.ones(1, len(spec.clauses), dtype=torch.bool))
    graph64 = graph.to(torch.float64)
    bounded = 0
    size = options.inputs.batch or (1024 if torch.device(options.device).type == "cpu" else 16384)
    while len(queue):
        if until is not None and bounded and time.monotonic() >= until:  # one batch at least: progress
            return queue
        if time.monotonic() >= deadline:
            return Verdict("timeout", method="bab", detail=f"{len(queue)} domains open after {bounded} bounded")
        batch = queue.pop(min(size, len(queue)))
        try:
            refuted, sensitivity = bounder.refute(batch)
        except DeadlineReached:  # the instance's deadline, inside a pass: say how far the search got
            left = len(queue) + len(batch)
            return Verdict("timeout", method="bab", detail=f"{left} domains open after {bounded} bounded")
        bounded += len(batch)
        batch.open &= ~refuted
        alive = batch.open.any(1)
        batch = _Boxes(batch.lower[alive], batch.upper[alive], batch.open[alive])
        if not len(batch):
            continue
        candidate = _probe(graph64, spec, batch)
        if candidate is not None:
            verdict = confirm(graph, prop, candidate, "bab")
            if verdict is not None:
                verdict.detail = f"{bounded} domains bounded"
                return verdict
        if len(queue) + 2 * len(batch) > options.inputs.max_domains:
            return Verdict("unknown", method="bab", detail="domain limit reached")
        sensitivity = sensitivity[alive] if sensitivity is not None else _forward_sensitivity(graph64, spec, batch)
        children, unsplittable = _split(batch, sensitivity)
        queue.push(children)
        queue.stuck += unsplittable
    if until is not None:
        return queue
    return _settled(queue.stuck, f"{bounded} domains bounded")


def _settled(stuck: int, detail: str) -> Verdict:
    """`unsat` once no box is open, unless some point-like box was left neither refuted nor violated."""
    if stuck:
        return Verdict("unknown", method="bab", detail=f"{stuck} point-like domains neither refuted nor violated")
    return Verdict("unsat", method="bab", detail=detail)


def _split_inputs_in_rounds(graph: Graph, prop: Property, options: BaBOptions, deadline: float) -> Verdict:
    """Input splitting with a process pool, in rounds. This process first searches alone for POOL_AFTER
    seconds (most searches end sooner than a pool starts). Then every region's open sub-boxes are dealt
    into ROUND_PARTS parts a worker, and one more for this process, which splits its own part while the
    workers split theirs (so the search goes on while workers import torch, or on a loaded machine);
    each part is split for up to PART_SECONDS and what is still open comes back, to be dealt again, so
    the boxes of a hard corner end up spread over every worker. The first confirmed `sat` ends the
    search; `unsat` once no box is left anywhere."""
    single = dataclasses.replace(options, workers=1)
    alone_until = time.monotonic() + POOL_AFTER
    open_boxes, stuck = {}, 0
    for index, spec in enumerate(prop.regions):
        result = _split_inputs(graph, prop, spec, single, deadline, until=alone_until)
        if isinstance(result, Verdict):
            return result
        stuck += result.stuck
        if len(result):
            open_boxes[index] = dataclasses.replace(result, stuck=0)
    rounds = 0
    if not open_boxes:
        return _settled(stuck, "input splitting in this process")
    with start_pool(options.workers) as pool:
        while open_boxes:
            if time.monotonic() >= deadline:
                left = sum(len(d) for d in open_boxes.values())
                return Verdict("timeout", method="bab", detail=f"{left} domains open after {rounds} rounds")
            rounds += 1
            count = max(1, ROUND_PARTS * (options.workers + 1) // len(open_boxes))
            jobs = [functools.partial(_round_part, graph, prop, index, single, deadline, part, PART_SECONDS)
                    for index, boxes in open_boxes.items() for part in boxes.deal(count)]
            pending = [pool.apply_async(run_job, (job,)) for job in jobs[1:]]
            open_boxes = {}
            for index, result in [jobs[0]()] + [job.get() for job in pending]:
                if isinstance(result, _Boxes):
                    stuck, result.stuck = stuck + result.stuck, 0
                    if len(result) and index in open_boxes:
                        open_boxes[index].push(result)
                    elif len(result):
                        open_boxes[index] = result
                elif result.status != "unsat":  # sat (confirmed where it was found), or a domain limit
                    pool.terminate()
                    return result
    return _settled(stuck, f"input splitting in {options.workers} workers, {rounds} rounds (and this process)")


def _round_part(graph: Graph, prop: Property, index: int, options: BaBOptions, deadline: float,
                part: "_Boxes", seconds: float) -> "tuple[int, Verdict | _Boxes]":
    """One worker's part of a round: region `index`'s sub-boxes `part` split for `seconds` at most."""
    end = min(deadline, time.monotonic() + seconds)
    return index, _split_inputs(graph, prop, prop.regions[index], options, deadline, part, end)


class _RowBounder:
    """Lower bounds of a region's clause rows over batches of sub-boxes. With an engine method
    (crown, fast-lin) it also returns, per domain and input, how much that input's width costs the
    most promising row of each open clause (`_sensitivity`): splitting the input where it costs most."""

    ENGINE_MODES = {"crown": "adaptive", "fast-lin": "same-slope"}

    def __init__(self, graph: Graph, spec: RegionSpec, method: Method, device: str = "cpu"):
        self.device = torch.device(device)
        self.graph, self.method = graph.to(torch.float32, self.device), method
        self.mode = self.ENGINE_MODES.get(method.name)
        rows, rhs, owner = spec.rows()
        self.rows = rows.float().unsqueeze(0).to(self.device)
        self.rhs, self.owner = rhs.float().to(self.device), owner.to(self.device)
        self.clauses = len(spec.clauses)
        self.forward = supports_forward_mode(graph)

    def refute(self, domains: "_Boxes") -> tuple[torch.Tensor, torch.Tensor | None]:
        """[D, clauses] refuted flags, and [D, n] split sensitivities (None without the engine), on the
        CPU; the bounds themselves are computed on the bounder's device."""
        box = Box(domains.lower, domains.upper).to(torch.float32, self.device)  # rounded outward
        lower, upper = box.lower, box.upper
        if self.mode is None:
            bound = self.method.bound(self.graph, Box(lower, upper), self.rows, _wide_batches(self.method)).lower
            return self._refuted(bound.detach() - self.rhs).cpu(), None
        with torch.no_grad():  # intermediate bounds once, without a graph for autograd
            intermediate = self._intermediate(Box(lower, upper))
        if not self.forward:
            return self._refute_by_row_gradient(domains, lower, upper, intermediate)
        with torch.no_grad():
            bound = compute_bounds(self.graph, Box(lower, upper), self.rows, self.mode, intermediate=intermediate,
                                   batch_rows=1 << 30, sides="lower").lower - self.rhs
        refuted = self._refuted(bound)
        open_after = domains.open.to(self.device) & ~refuted
        sensitivity = torch.zeros_like(lower)
        alive = open_after.any(1)
        if bool(alive.any()):
            sensitivity[alive] = self._sensitivity(lower[alive], upper[alive], open_after[alive])
        return refuted.cpu(), sensitivity.double().cpu()

    def _refute_by_row_gradient(self, domains: "_Boxes", lower: torch.Tensor, upper: torch.Tensor,
                                intermediate: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Without forward mode (a 2-D input with max pooling, say), the "sb" score: the spec row's
        input coefficients at fixed intermediate bounds, |coefficient| x width (the radius gradient
        through full back-substitution costs far more than the splits it saves)."""
        center = ((lower + upper) / 2).requires_grad_(True)
        radius = (upper - lower) / 2
        box = Box(torch.minimum(center - radius, lower), torch.maximum(center + radius, upper))  # float32 rounding
        bound = compute_bounds(self.graph, box, self.rows, self.mode,
                               intermediate=intermediate, batch_rows=1 << 30, sides="lower").lower - self.rhs
        refuted = self._refuted(bound.detach())
        promising = self._best_rows(bound)
        open_after = domains.open.to(self.device) & ~refuted
        (coefficients,) = torch.autograd.grad((promising * open_after).sum(), center)
        return refuted.cpu(), coefficients.abs().double().cpu()

    def _sensitivity(self, lower: torch.Tensor, upper: torch.Tensor, open_clauses: torch.Tensor) -> torch.Tensor:
        """How much each input's half-width costs the most promising row of each open clause: minus the
        gradient in the radius of a forward-mode-intermediate CROWN bound, which sees both the final
        concretization and the looser relaxations a wide input causes upstream ([D, n], >= 0)."""
        center = (lower + upper) / 2
        radius = ((upper - lower) / 2).requires_grad_(True)
        box = Box(center - radius, center + radius)
        with torch.enable_grad():
            bounds = bounds_by_forward_mode(self.graph, box, self.mode)
            rows = self.rows.reshape(1, self.rows.shape[1], *self.graph.output_shape)
            bound = backward_bound(self.graph, box, self.graph.output_name, rows, bounds, self.mode,
                                   sides="lower").lower - self.rhs
            promising = self._best_rows(bound)
            (gradient,) = torch.autograd.grad((promising * open_clauses).sum(), radius)
        return (-gradient).clamp(min=0) / 2

    def _intermediate(self, box: Box) -> dict:
        """Bounds of every value a nonlinearity reads. Where the graph allows, forward-mode bounds first
        (cheap on a few inputs), then back-substitution only for the neurons they leave unstable."""
        reference = bounds_by_forward_mode(self.graph, box, self.mode) if self.forward else None
        bounds = layer_bounds(self.graph, box, self.mode, {}, batch_rows=1 << 30, reference=reference,
                              skip_stable=self.forward)
        return {name: bounds[name] for name in values_to_relax(self.graph)}

    def _best_rows(self, margins: torch.Tensor) -> torch.Tensor:
        """[D, clauses]: each clause's largest row lower bound (the row closest to refuting it)."""
        return torch.stack([margins[:, self.owner == k].max(1).values for k in range(self.clauses)], 1)

    def _refuted(self, margins: torch.Tensor) -> torch.Tensor:
        """A clause is refuted when any of its rows has a positive lower bound."""
        return torch.stack([(margins[:, self.owner == k] > 0).any(1) for k in range(self.clauses)], 1)


def _wide_batches(method: Method):
    """The bound method's default options, without row chunking (domains are already batched)."""
    options = method.default_options()
    if hasattr(options, "batch_rows"):
        options = dataclasses.replace(options, batch_rows=1 << 30)
    return options


def _violation(graph64: Graph, spec: RegionSpec, points: torch.Tensor, open_clauses: torch.Tensor) -> torch.Tensor:
    """Per point, the violation of its best open clause (<= 0: a counterexample candidate)."""
    outputs = graph64.forward_flat(points)
    value = torch.stack([clause.slack(outputs) for clause in spec.clauses], -1)
    if spec.input_constraints is not None:
        value = torch.maximum(value, spec.input_constraints.slack(points).unsqueeze(-1))
    return value.masked_fill(~open_clauses, float("inf")).amin(-1)


def _probe(graph64: Graph, spec: RegionSpec, domains: _Boxes, local_starts: int = 64, steps: int = 12):
    """A counterexample candidate in the open domains, or None: their centres first, then a few signed
    gradient steps inside each of the `local_starts` domains whose centres come closest to violating."""
    points = (domains.lower + domains.upper) / 2
    with torch.no_grad():
        violation = _violation(graph64, spec, points, domains.open)
    chosen = violation.argsort()[:local_starts]
    lower, upper, open_clauses = domains.lower[chosen], domains.upper[chosen], domains.open[chosen]
    x = points[chosen]
    for step in range(steps + 1):
        if step:
            x.requires_grad_(True)
            (gradient,) = torch.autograd.grad(_violation(graph64, spec, x, open_clauses).sum(), x)
            size = 0.25 * (1 - (step - 1) / steps) + 0.02
            x = torch.minimum(torch.maximum(x.detach() - size * (upper - lower) * gradient.sign(), lower), upper)
        with torch.no_grad():
            violation = _violation(graph64, spec, x, open_clauses)
        best = int(violation.argmin())
        if float(violation[best]) <= 0:
            with torch.no_grad():
                return x[best], graph64.forward_flat(x[best:best + 1])[0]
    return None


def _forward_sensitivity(graph64: Graph, spec: RegionSpec, domains: _Boxes) -> torch.Tensor:
    """|gradient| of the best open clause's violation at each domain centre: [D, n]."""
    centers = ((domains.lower + domains.upper) / 2).requires_grad_(True)
    violation = _violation(graph64, spec, centers, domains.open)
    (gradient,) = torch.autograd.grad(violation.clamp(max=1e6).sum(), centers)
    return gradient.abs()


def _split(domains: _Boxes, sensitivity: torch.Tensor) -> tuple[_Boxes, int]:
    """Halve every domain along the input with the largest sensitivity x width; also the count of
    domains with no input left to halve (every width zero or one float apart, as pinned inputs are):
    a bound that cannot refute such a point-like domain never will, so it stays open."""
    width = domains.upper - domains.lower
    dimension = (sensitivity * width + 1e-9 * width).argmax(1)  # the widest input where all are flat
    index = torch.arange(len(domains))
    middle = (domains.lower[index, dimension] + domains.upper[index, dimension]) / 2
    splittable = (middle > domains.lower[index, dimension]) & (middle < domains.upper[index, dimension])
    if not bool(splittable.all()):
        keep = splittable.nonzero()[:, 0]
        children, _ = _split(_Boxes(domains.lower[keep], domains.upper[keep], domains.open[keep]),
                             sensitivity[keep])
        return children, int((~splittable).sum())
    left_upper, right_lower = domains.upper.clone(), domains.lower.clone()
    left_upper[index, dimension] = middle
    right_lower[index, dimension] = middle
    return _Boxes(torch.cat([domains.lower, right_lower]), torch.cat([left_upper, domains.upper]),
                    torch.cat([domains.open, domains.open])), 0


@hookimpl
def verikit_methods(register) -> None:
    register(BranchAndBound())
