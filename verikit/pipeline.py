"""The verification pipeline: attack -> bound methods from cheap to strong -> complete method -> Verdict.

`unsat` only when every clause of every region is refuted by a sound bound (some row's lower bound of
`c . y - d` is positive); `sat` only with a counterexample that onnxruntime confirms."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from verikit.deadline import DeadlineReached, until
from verikit.graph import Graph
from verikit.methods.base import Verdict
from verikit.plugins import get_method, registry
from verikit.spec.property import Property, RegionSpec

DEFAULT_BOUND_ORDER = ("ibp", "crown", "alpha-crown", "group-dual")  # each only where it applies
CHEAP_BOUNDS = ("ibp", "fast-lin", "crown", "cnn-cert")  # one pass each; the others iterate
STRONG_ATTACK = {"restarts": 4096, "max_points": 4096, "steps": 50, "rounds": 1000}  # rounds: to its deadline
FIRST_ATTACK_SHARE = 0.02  # of the timeout (at least 1 s), at most, for the quick attack before any bound
STRONG_ATTACK_SHARE = 0.15  # of the time left, for the attack with more restarts
ITERATED_COST = 20  # an iterative bound method costs about this many cheap passes (alpha-crown's steps) ...
SLOW_SHARE = 0.1  # ... and where that is above this share of the time left, the strong attack goes first
BOUND_SHARE = 0.5  # of the time left, at most, for one iterative bound method when a complete one follows
DEFAULT_COMPLETE = "bab"
LOW_DIMENSIONAL = 16  # inputs: the complete method splits the input box, which beats alpha-crown's slopes
FIRST_SLICE_SHARE = 0.1  # of the time, for the complete method before the strong attack on such inputs


@dataclass
class VerifyOptions:
    """timeout: seconds for the whole instance; methods: bound methods to try in order (None: the
    registered ones of DEFAULT_BOUND_ORDER); attack / complete: method names or None to skip;
    device: where the bound methods (and the complete method, where it can) compute ("cuda");
    workers: processes the complete method may use (bab: pieces of the property); seed: of the
    attacks' starts and of torch's generator during the call (the same seed, the same search, up to
    where the deadline cuts it)."""

    timeout: float = 60.0
    methods: tuple[str, ...] | None = None
    attack: str | None = "pgd"
    complete: str | None = DEFAULT_COMPLETE
    input_tolerance: float = 0.0
    device: str = "cpu"
    workers: int = 1
    seed: int = 0


@dataclass
class _Open:
    """The clauses of one region not yet refuted."""

    region_index: int
    clauses: list[int] = field(default_factory=list)


def bound_methods(options: VerifyOptions) -> list[str]:
    if options.methods is not None:
        return list(options.methods)
    names = {e.name for e in registry().methods("bound")}
    return [m for m in DEFAULT_BOUND_ORDER if m in names]


def complete_method(options: VerifyOptions) -> str | None:
    if options.complete is None:
        return None
    names = {e.name for e in registry().methods("complete")}
    if options.complete == DEFAULT_COMPLETE and options.complete not in names:
        return None
    return options.complete


def verify(graph: Graph, prop: Property, options: VerifyOptions | None = None,
           progress: Callable[[str], None] | None = None) -> Verdict:
    """Decide the property on the graph within options.timeout seconds. The deadline holds inside
    long computations too (verikit.deadline): a pass it cuts short ends the call with `timeout`."""
    options = options or VerifyOptions()
    start = time.monotonic()
    schedule = _Schedule(graph, prop, options, progress or (lambda _stage: None), start)
    with torch.random.fork_rng(devices=[]), until(schedule.deadline):  # the caller's generator is left as it was
        torch.manual_seed(options.seed)
        try:
            verdict = schedule.run()
        except DeadlineReached:
            verdict = Verdict("timeout", detail="deadline reached while bounding")
    return _stamp(verdict, start)


class _Schedule:
    """One verify call's plan: the quick attack, bound methods from cheap to strong (the strong attack
    before the iterative ones where those would take much of the time), then the complete method."""

    def __init__(self, graph: Graph, prop: Property, options: VerifyOptions, say: Callable[[str], None],
                 start: float):
        self.graph, self.prop, self.options, self.say = graph, prop, options, say
        self.start, self.deadline = start, start + options.timeout
        methods = [get_method(name) for name in bound_methods(options)]  # unknown names fail before work
        self.complete = complete_method(options)
        self.low_dimensional = (self.complete is not None and options.methods is None
                                and prop.n_inputs <= LOW_DIMENSIONAL)
        if self.low_dimensional:
            methods = [m for m in methods if m.name != "alpha-crown"]
        if options.methods is None:  # the default order: only the methods this graph suits
            methods = [m for m in methods if m.applies(graph)]
        self.methods = methods
        self.strong_done = False
        self.cheap_seconds = 0.0  # spent in one-pass bound methods: the unit of an iterative one's cost

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self) -> Verdict:
        options = self.options
        if options.attack:
            self.say(f"attack ({options.attack})")
            quick = self.start + max(1.0, FIRST_ATTACK_SHARE * options.timeout)
            verdict = _attack(self.graph, self.prop, options.attack, min(self.deadline, quick), seed=options.seed)
            if verdict is not None:
                return verdict
        open_regions = [_Open(i, list(range(len(spec.clauses)))) for i, spec in enumerate(self.prop.regions)]
        for method in self.methods:
            if self.left() <= 0:
                return Verdict("timeout", detail="deadline reached while bounding")
            if method.name not in CHEAP_BOUNDS and self._bounds_are_slow():
                verdict = self._strong_attack(open_regions)
                if verdict is not None:
                    return verdict
            self.say(f"bounds ({method.name})")
            started = time.monotonic()
            share = BOUND_SHARE if self.complete is not None else 1.0
            method_deadline = min(self.deadline, started + share * self.left())
            outcome = _refute(self.graph, self.prop, method, open_regions, options.device, method_deadline)
            if method.name in CHEAP_BOUNDS:
                self.cheap_seconds += time.monotonic() - started
            if isinstance(outcome, Verdict):
                return outcome
            open_regions = outcome
            if not open_regions:
                return Verdict("unsat", method=method.name)
        return self._complete_phase(open_regions)

    def _bounds_are_slow(self) -> bool:
        """Whether an iterative bound method would take much of the time left, judged by the one-pass
        methods' measured cost: then the strong attack runs before it (a large conv net)."""
        return not self.strong_done and ITERATED_COST * self.cheap_seconds > SLOW_SHARE * self.left()

    def _strong_attack(self, open_regions: list[_Open]) -> Verdict | None:
        self.strong_done = True
        if not self.options.attack or self.left() <= 0:
            return None
        self.say(f"attack ({self.options.attack}, more restarts)")
        strong_deadline = time.monotonic() + STRONG_ATTACK_SHARE * self.left()
        return _attack(self.graph, _restrict(self.prop, open_regions), self.options.attack, strong_deadline,
                       strong=True, seed=self.options.seed + 1)

    def _complete_phase(self, open_regions: list[_Open]) -> Verdict:
        options, complete = self.options, self.complete
        if self.low_dimensional:  # input splitting decides most such properties in a second or two
            self.say(f"complete ({complete}, first slice)")
            first_deadline = time.monotonic() + FIRST_SLICE_SHARE * (self.deadline - self.start)
            verdict = _complete(self.graph, self.prop, open_regions, complete, min(first_deadline, self.deadline),
                                options.device)
            if verdict.status in ("sat", "unsat") or self.left() <= 0:
                return verdict
        verdict = self._strong_attack(open_regions) if not self.strong_done else None
        if verdict is not None:
            return verdict
        if complete is not None and self.left() > 0:
            self.say(f"complete ({complete})")
            return _complete(self.graph, self.prop, open_regions, complete, self.deadline, options.device,
                             options.workers)
        status = "timeout" if self.left() <= 0 else "unknown"
        return Verdict(status, detail=f"{sum(len(o.clauses) for o in open_regions)} clause(s) not refuted")


def _complete(graph: Graph, prop: Property, open_regions: list[_Open], name: str, deadline: float,
              device: str = "cpu", workers: int = 1) -> Verdict:
    """The complete method on the clauses still open; its `sat` stands only once confirmed. (The
    first slice of input splitting runs with one process: starting workers costs seconds.)"""
    method = get_method(name)
    options = _options_with(method, device=device, workers=workers)
    verdict = method.decide(graph, _restrict(prop, open_regions), options, deadline)
    if verdict.status == "sat":
        verdict = confirm(graph, prop, verdict.counterexample, name) or Verdict("unknown", method=name)
    return verdict


def _options_with(method, **fields):
    """The method's default options with those of `fields` its options dataclass has."""
    options = method.default_options()
    present = {key: value for key, value in fields.items() if hasattr(options, key)}
    return dataclasses.replace(options, **present) if present else options


def _stamp(verdict: Verdict, start: float) -> Verdict:
    verdict.seconds = time.monotonic() - start
    return verdict


def _attack(graph: Graph, prop: Property, name: str, deadline: float, strong: bool = False,
            seed: int = 0) -> Verdict | None:
    """Run the attack method; `strong`: a second round with many more restarts (rare counterexamples
    need thousands of starts), in rounds of fresh starts until its deadline, where the method's options
    have those fields (the attack sizes its batch of starts to the net's measured cost)."""
    method = get_method(name)
    options = _options_with(method, seed=seed)
    if strong:
        options = _options_with(method, seed=seed, **STRONG_ATTACK)
    found = method.attack(graph, prop, options, deadline)
    return confirm(graph, prop, found, name) if found is not None else None


def _refute(graph: Graph, prop: Property, method, open_regions: list[_Open], device: str = "cpu",
            deadline: float | None = None) -> list[_Open] | Verdict:
    """Bound each open region's clause rows with `method` (computing on `device`, which the bound
    methods follow from the region, and stopping iterative work at `deadline` where the method's
    options have one); keep the clauses no row refutes. A clause whose every row's upper bound is at
    most 0 holds at every point of the region: its centre is confirmed and returned as `sat`."""
    options = _options_with(method, deadline=deadline)
    still_open = []
    for item in open_regions:
        spec = prop.regions[item.region_index]
        clauses = [spec.clauses[c] for c in item.clauses]
        rows = torch.cat([c.coefficients for c in clauses]).unsqueeze(0)
        rhs = torch.cat([c.rhs for c in clauses])
        region = spec.region.to(torch.float32, device)
        bound = method.bound(graph, region, rows.float().to(device), options)
        lower, upper = (side[0].double().cpu() - rhs for side in (bound.lower, bound.upper))
        kept, offset = [], 0
        for index, clause in zip(item.clauses, clauses):
            count = clause.coefficients.shape[0]
            if count and bool((upper[offset:offset + count] <= 0).all()):
                verdict = _violated_everywhere(graph, prop, spec, method.name)
                if verdict is not None:
                    return verdict
            if count == 0 or not bool((lower[offset:offset + count] > 0).any()):
                kept.append(index)
            offset += count
        if kept:
            still_open.append(_Open(item.region_index, kept))
    return still_open


def _violated_everywhere(graph: Graph, prop: Property, spec: RegionSpec, method: str) -> Verdict | None:
    """The region's centre (projected into it), confirmed as a counterexample: bounds showed that every
    point of the region satisfies the clause."""
    center = spec.region.project(spec.region.bounding_box().center.unsqueeze(1))[0, 0].double()
    with torch.no_grad():
        output = graph.to(torch.float64).forward_flat(center[None])[0]
    verdict = confirm(graph, prop, (center, output), method)
    if verdict is not None:
        verdict.detail = "the bounds show every point of the region violates the property"
    return verdict


def _restrict(prop: Property, open_regions: list[_Open]) -> Property:
    """The property over only the clauses still open."""
    regions = []
    for item in open_regions:
        spec = prop.regions[item.region_index]
        regions.append(RegionSpec(spec.region, tuple(spec.clauses[c] for c in item.clauses),
                                  spec.input_constraints))
    return Property(prop.n_inputs, prop.n_outputs, tuple(regions), prop.source)


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
