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

from verikit.graph import Graph
from verikit.methods.base import Verdict
from verikit.plugins import get_method, registry
from verikit.spec.property import Property, RegionSpec

DEFAULT_BOUND_ORDER = ("ibp", "crown", "alpha-crown", "group-dual")  # each only where it applies
STRONG_ATTACK = {"restarts": 4096, "max_points": 4096, "steps": 50, "seed": 1}
FIRST_ATTACK_SECONDS = 1.0  # at most, for the quick attack before any bound (a conv net's restarts are slow)
STRONG_ATTACK_SHARE = 0.15  # of the time left when the bounds have not decided
STRONG_ATTACK_STEP_SECONDS = 0.025  # one step over all starts: ~4096 starts on ACAS Xu, 256 on a conv net
DEFAULT_COMPLETE = "bab"
LOW_DIMENSIONAL = 16  # inputs: the complete method splits the input box, which beats alpha-crown's slopes
FIRST_SLICE_SHARE = 0.1  # of the time, for the complete method before the strong attack on such inputs


@dataclass
class VerifyOptions:
    """timeout: seconds for the whole instance; methods: bound methods to try in order (None: the
    registered ones of DEFAULT_BOUND_ORDER); attack / complete: method names or None to skip;
    device: where the bound methods (and the complete method, where it can) compute ("cuda");
    workers: processes the complete method may use (bab: pieces of the property)."""

    timeout: float = 60.0
    methods: tuple[str, ...] | None = None
    attack: str | None = "pgd"
    complete: str | None = DEFAULT_COMPLETE
    input_tolerance: float = 0.0
    device: str = "cpu"
    workers: int = 1


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
    """Decide the property on the graph within options.timeout seconds."""
    options = options or VerifyOptions()
    say = progress or (lambda _stage: None)
    start = time.monotonic()
    deadline = start + options.timeout
    methods = [get_method(name) for name in bound_methods(options)]  # unknown names fail before work
    finish = lambda v: _stamp(v, start)  # noqa: E731
    complete = complete_method(options)
    low_dimensional = complete is not None and options.methods is None and prop.n_inputs <= LOW_DIMENSIONAL
    if low_dimensional:
        methods = [m for m in methods if m.name != "alpha-crown"]
    if options.methods is None:  # the default order: only the methods this graph suits
        methods = [m for m in methods if m.applies(graph)]

    if options.attack:
        say(f"attack ({options.attack})")
        verdict = _attack(graph, prop, options.attack, min(deadline, start + FIRST_ATTACK_SECONDS))
        if verdict is not None:
            return finish(verdict)
    open_regions = [_Open(i, list(range(len(spec.clauses)))) for i, spec in enumerate(prop.regions)]
    for method in methods:
        if time.monotonic() >= deadline:
            return finish(Verdict("timeout", detail="deadline reached while bounding"))
        say(f"bounds ({method.name})")
        open_regions = _refute(graph, prop, method, open_regions, options.device, deadline)
        if not open_regions:
            return finish(Verdict("unsat", method=method.name))
    if low_dimensional:  # input splitting decides most such properties in a second or two
        say(f"complete ({complete}, first slice)")
        first_deadline = time.monotonic() + FIRST_SLICE_SHARE * (deadline - start)
        verdict = _complete(graph, prop, open_regions, complete, min(first_deadline, deadline), options.device)
        if verdict.status in ("sat", "unsat") or time.monotonic() >= deadline:
            return finish(verdict)
    if options.attack and time.monotonic() < deadline:
        say(f"attack ({options.attack}, more restarts)")
        strong_deadline = time.monotonic() + STRONG_ATTACK_SHARE * (deadline - time.monotonic())
        verdict = _attack(graph, _restrict(prop, open_regions), options.attack, strong_deadline, strong=True)
        if verdict is not None:
            return finish(verdict)
    if complete is not None and time.monotonic() < deadline:
        say(f"complete ({complete})")
        return finish(_complete(graph, prop, open_regions, complete, deadline, options.device, options.workers))
    status = "timeout" if time.monotonic() >= deadline else "unknown"
    return finish(Verdict(status, detail=f"{sum(len(o.clauses) for o in open_regions)} clause(s) not refuted"))


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


def _attack(graph: Graph, prop: Property, name: str, deadline: float, strong: bool = False) -> Verdict | None:
    """Run the attack method; `strong`: a second round with many more restarts (rare counterexamples
    need thousands of starts) and another seed, when the method's options have those fields."""
    method = get_method(name)
    options = method.default_options()
    if strong:
        changes = {key: value for key, value in STRONG_ATTACK.items() if hasattr(options, key)}
        if "max_points" in changes:  # thousands of starts suit small nets; scale down for costly ones
            points = int(STRONG_ATTACK_STEP_SECONDS / _seconds_per_point(graph, prop.n_inputs))
            changes["restarts"] = changes["max_points"] = max(256, min(STRONG_ATTACK["max_points"], points))
        options = dataclasses.replace(options, **changes)
    found = method.attack(graph, prop, options, deadline)
    return confirm(graph, prop, found, name) if found is not None else None


def _seconds_per_point(graph: Graph, inputs: int) -> float:
    """Measured seconds of one float64 forward and backward pass per input point (weight counts
    misjudge convolutions, whose weights are reused at every position): 16 points, then 512 where
    those were too quick to time (small nets, where per-call overhead would dominate)."""
    graph64 = graph.to(torch.float64)
    for points in (16, 512):
        x = torch.rand(points, inputs, dtype=torch.float64, requires_grad=True)
        started = time.perf_counter()
        torch.autograd.grad(graph64.forward_flat(x).sum(), x)
        seconds = time.perf_counter() - started
        if seconds > 0.05:
            break
    return max(1e-9, seconds / points)


def _refute(graph: Graph, prop: Property, method, open_regions: list[_Open], device: str = "cpu",
            deadline: float | None = None) -> list[_Open]:
    """Bound each open region's clause rows with `method` (computing on `device`, which the bound
    methods follow from the region, and stopping iterative work at `deadline` where the method's
    options have one); keep the clauses no row refutes."""
    options = _options_with(method, deadline=deadline)
    still_open = []
    for item in open_regions:
        spec = prop.regions[item.region_index]
        clauses = [spec.clauses[c] for c in item.clauses]
        rows = torch.cat([c.coefficients for c in clauses]).unsqueeze(0)
        rhs = torch.cat([c.rhs for c in clauses])
        region = spec.region.to(torch.float32, device)
        lower = method.bound(graph, region, rows.float().to(device), options).lower[0].double().cpu() - rhs
        kept, offset = [], 0
        for index, clause in zip(item.clauses, clauses):
            count = clause.coefficients.shape[0]
            if count == 0 or not bool((lower[offset:offset + count] > 0).any()):
                kept.append(index)
            offset += count
        if kept:
            still_open.append(_Open(item.region_index, kept))
    return still_open


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
    """The counterexample input to report for the float64 candidate x: in the box of the first region
    holding x, each coordinate rounded to float32 (nudged one ulp back inside where rounding left the
    box), or kept in float64 where no float32 value lies in its interval (a pinned or sub-ulp input)."""
    x32 = x.float()
    for spec in prop.regions:
        box = spec.region.bounding_box()
        lower, upper = box.lower[0].double(), box.upper[0].double()
        if bool(((x >= lower) & (x <= upper)).all()):
            up = torch.nextafter(x32, torch.tensor(np.inf, dtype=torch.float32))
            down = torch.nextafter(x32, torch.tensor(-np.inf, dtype=torch.float32))
            x32 = torch.where(x32.double() < lower, up, x32)
            x32 = torch.where(x32.double() > upper, down, x32)
            inside = (x32.double() >= lower) & (x32.double() <= upper)
            return torch.where(inside, x32.double(), x)
    return x32.double()
