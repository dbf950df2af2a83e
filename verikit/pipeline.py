"""The verification pipeline: attack -> bound methods from cheap to strong -> complete method -> Verdict.

`unsat` only when every clause of every region is refuted by a sound bound (some row's lower bound of
`c . y - d` is positive); `sat` only with a counterexample that onnxruntime confirms."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from verikit import capabilities
from verikit.deadline import DeadlineReached, until
from verikit.graph import Graph
from verikit.plugins import get_method, registry
from verikit.spec.property import Property, RegionSpec
from verikit.verdict import Verdict, confirm

DEFAULT_BOUND_ORDER = ("ibp", "crown", "alpha-crown", "group-dual")  # each only where it applies
CHEAP_BOUNDS = ("ibp", "fast-lin", "crown", "cnn-cert")  # one pass each; the others iterate
FIRST_ATTACK_SHARE = 0.02  # of the timeout (at least 1 s), at most, for the quick attack before any bound
STRONG_ATTACK_SHARE = 0.15  # of the time left, at most, for the attack with more restarts
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
    where the deadline cuts it); method_options: an options object by method name, for the methods
    that should not run with their defaults."""

    timeout: float = 60.0
    methods: tuple[str, ...] | None = None
    attack: str | None = "pgd"
    complete: str | None = DEFAULT_COMPLETE
    input_tolerance: float = 0.0
    device: str = "cpu"
    workers: int = 1
    seed: int = 0
    method_options: dict[str, Any] = field(default_factory=dict)


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
            methods = [m for m in methods if m.applies(graph) and not capabilities.missing(graph, m)]
        else:  # the user's choice: a rule that lacks what a method needs is one clear error, now
            for method in methods:
                capabilities.check(graph, method)
        chosen = [get_method(name) for name in (options.attack, self.complete) if name]
        for method in chosen:
            if method.name != DEFAULT_COMPLETE or options.complete != DEFAULT_COMPLETE:
                capabilities.check(graph, method)
            elif capabilities.missing(graph, method):
                self.complete = None  # the default complete method, on a model it cannot take
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
            verdict = _attack(self.graph, self.prop, options.attack, min(self.deadline, quick), seed=options.seed,
                              options=options.method_options.get(options.attack))
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
            outcome = _refute(self.graph, self.prop, method, open_regions, options.device, method_deadline,
                              options.method_options.get(method.name))
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
                       strong=True, seed=self.options.seed + 1,
                       options=self.options.method_options.get(self.options.attack))

    def _complete_phase(self, open_regions: list[_Open]) -> Verdict:
        options, complete = self.options, self.complete
        if self.low_dimensional:  # input splitting decides most such properties in a second or two
            self.say(f"complete ({complete}, first slice)")
            first_deadline = time.monotonic() + FIRST_SLICE_SHARE * (self.deadline - self.start)
            verdict = _complete(self.graph, self.prop, open_regions, complete, min(first_deadline, self.deadline),
                                options.device, 1, options.method_options.get(complete))
            if verdict.status in ("sat", "unsat") or self.left() <= 0:
                return verdict
        verdict = self._strong_attack(open_regions) if not self.strong_done else None
        if verdict is not None:
            return verdict
        if complete is not None and self.left() > 0:
            self.say(f"complete ({complete})")
            return _complete(self.graph, self.prop, open_regions, complete, self.deadline, options.device,
                             options.workers, options.method_options.get(complete))
        status = "timeout" if self.left() <= 0 else "unknown"
        return Verdict(status, detail=f"{sum(len(o.clauses) for o in open_regions)} clause(s) not refuted")


def _complete(graph: Graph, prop: Property, open_regions: list[_Open], name: str, deadline: float,
              device: str = "cpu", workers: int = 1, options=None) -> Verdict:
    """The complete method on the clauses still open; its `sat` stands only once confirmed. (The
    first slice of input splitting runs with one process: starting workers costs seconds.)"""
    method = get_method(name)
    verdict = method.decide(graph, _restrict(prop, open_regions), options or method.default_options(), deadline,
                            device=device, workers=workers)
    if verdict.status == "sat":
        verdict = confirm(graph, prop, verdict.counterexample, name) or Verdict("unknown", method=name)
    return verdict


def _stamp(verdict: Verdict, start: float) -> Verdict:
    verdict.seconds = time.monotonic() - start
    return verdict


def _attack(graph: Graph, prop: Property, name: str, deadline: float, strong: bool = False,
            seed: int = 0, options=None) -> Verdict | None:
    """Run the attack method; `strong`: a second round with the method's escalated options (pgd: many
    more restarts, which rare counterexamples need; it sizes its batch of starts to the net's measured
    cost: up to 4096 on ACAS Xu, a few hundred on a conv net)."""
    method = get_method(name)
    options = options or method.default_options()
    found = method.attack(graph, prop, method.escalated(options) if strong else options, deadline, seed=seed)
    return confirm(graph, prop, found, name) if found is not None else None


def _refute(graph: Graph, prop: Property, method, open_regions: list[_Open], device: str = "cpu",
            deadline: float | None = None, options=None) -> list[_Open] | Verdict:
    """Bound each open region's clause rows with `method` (computing on `device`, which the bound
    methods follow from the region, and stopping iterative work at `deadline`); keep the clauses no row
    refutes. A clause whose every row's upper bound is at
    most 0 holds at every point of the region: its centre is confirmed and returned as `sat`."""
    options = options or method.default_options()
    still_open = []
    for item in open_regions:
        spec = prop.regions[item.region_index]
        rows, rhs, owner = spec.rows(item.clauses)
        region = spec.region.to(torch.float32, device)
        bound = method.bound(graph, region, rows.float().unsqueeze(0).to(device), options, deadline=deadline)
        lower, upper = (side[0].double().cpu() - rhs for side in (bound.lower, bound.upper))
        kept = []
        for position, index in enumerate(item.clauses):
            mine = owner == position
            if bool(mine.any()) and bool((upper[mine] <= 0).all()):
                verdict = _violated_everywhere(graph, prop, spec, method.name)
                if verdict is not None:
                    return verdict
            if not bool(mine.any()) or not bool((lower[mine] > 0).any()):
                kept.append(index)
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
