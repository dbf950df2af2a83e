"""One measurement of `verikit compare`: a method on one problem, timed and its peak memory sampled
(verikit.compare.memory), as records. Model loading and spec reading are not timed."""
from __future__ import annotations

import dataclasses
import time
from functools import lru_cache

import numpy as np
import torch

from verikit.compare.memory import PeakMemory
from verikit.compare.records import Record, environment
from verikit.compare.tasks import Task
from verikit.errors import VerikitError


class Clock:
    """Times the code inside it and samples its peak memory; usable once."""

    def __enter__(self) -> "Clock":
        self.memory = PeakMemory().__enter__()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.memory.__exit__(*exc)


def measure(task: Task) -> list[Record]:
    """The records of one task (one per spec row in bounds mode); a bad input gives one record whose
    `error` says why, so the rest of the comparison goes on."""
    record = Record(task.mode, task.recorded_model, task.recorded_spec, task.norm, task.eps, task.method.label,
                    label=task.label, options=task.method.options_json(), **environment())
    clock = Clock()
    try:
        graph = _model(task.model)
        values = MODES[task.mode](graph, task, clock)
    except VerikitError as error:
        return [dataclasses.replace(record, error=str(error).splitlines()[0])]
    common = {"seconds": round(clock.seconds, 6), "peak_rss_mib": clock.memory.peak_mib,
              "rss_growth_mib": clock.memory.growth_mib}
    return [dataclasses.replace(record, **common, **value) for value in values]


@lru_cache(maxsize=8)
def _model(path: str):
    from verikit.api import load_model

    return load_model(path)


def _bounds(graph, task: Task, clock: Clock) -> list[dict]:
    """Lower and upper bounds of every spec row (a spec file), or of y_label - y_j for every other
    class j over the task's ball (an experiment's input)."""
    from verikit.api import bound

    options = task.method.options_object()
    if task.index is None:
        prop = _spec(task.spec, graph)
        with clock:
            intervals = bound(graph, prop, method=task.method.name, options=options)
        lower = torch.cat([i.lower.reshape(-1) for i in intervals])
        upper = torch.cat([i.upper.reshape(-1) for i in intervals])
        label = None
    else:
        from verikit.radius import margin_rows

        x0, label = _input(graph, task)
        others = tuple(j for j in range(graph.output_size) if j != label)
        with clock:
            interval = bound(graph, _ball(task, x0), method=task.method.name, options=options,
                             coefficients=margin_rows(label, others, graph.output_size).float())
        lower, upper = interval.lower.reshape(-1), interval.upper.reshape(-1)
    return [{"row": row, "lower": float(low), "upper": float(high), "label": label}
            for row, (low, high) in enumerate(zip(lower.tolist(), upper.tolist()))]


def _radius(graph, task: Task, clock: Clock) -> list[dict]:
    """The certified radius around the input (a spec file's: its first region's centre) and the attack's."""
    from verikit.api import certified_radius

    if task.index is None:
        box = _spec(task.spec, graph).regions[0].region.bounding_box()
        x0 = ((box.lower + box.upper) / 2).reshape(-1).double()
        label = int(graph.to(torch.float64).forward_flat(x0.unsqueeze(0))[0].argmax())
    else:
        x0, label = _input(graph, task)
    settings = task.settings
    with clock:
        result = certified_radius(graph, x0, label, None, task.norm, task.method.name, domain=settings.domain,
                                  options=task.method.options_object(), steps=settings.steps,
                                  attack=settings.attack)
    return [{"label": label, "certified": result.certified, "upper_bracket": result.upper_bracket,
             "attack_radius": result.attack_radius}]


def _verdicts(graph, task: Task, clock: Clock) -> list[dict]:
    """The verdict of `verify` with the task's bound methods, then bab, until the task's timeout."""
    from verikit.api import verify

    label = task.label
    if task.index is None:
        prop = _spec(task.spec, graph)
    else:
        from verikit.region import parse_norm
        from verikit.spec.property import robustness_property

        x0, label = _input(graph, task)
        prop = robustness_property(x0, label, task.eps, graph.output_size, parse_norm(task.norm),
                                   _domain(task, x0, torch.float64), source=task.spec)
    with clock:
        chosen = {task.method.name: task.method.options_object()} if task.method.options else None
        verdict = verify(graph, prop, timeout=task.timeout, methods=task.method.chain, complete="bab",
                         method_options=chosen)
    return [{"label": label, "verdict": verdict.status, "decided_by": verdict.method}]


def _spec(path: str, graph):
    from verikit.api import load_spec

    return load_spec(path, graph)


def _input(graph, task: Task) -> tuple[torch.Tensor, int]:
    """The task's flat float64 input and its label (the given one, else the model's prediction)."""
    array = np.load(task.input_file, allow_pickle=False)
    array = array if array.ndim <= 1 else array[task.index]
    if array.size != graph.input_size:
        raise VerikitError(f"input {task.index} has {array.size} entries but the model takes {graph.input_size}",
                           path=task.input_file, fix=f"give inputs of shape {list(graph.input_shape)}")
    x0 = torch.from_numpy(np.asarray(array, dtype=np.float64)).reshape(-1)
    if task.label is not None:
        return x0, task.label
    with torch.no_grad():
        return x0, int(graph.to(torch.float64).forward_flat(x0.unsqueeze(0))[0].argmax())


def _ball(task: Task, x0: torch.Tensor):
    """The task's Lp ball around x0 (clipped to the domain), in float32 as the bound passes run."""
    from verikit.region import LpBall, parse_norm

    return LpBall(x0.float().unsqueeze(0), torch.tensor([task.eps]), parse_norm(task.norm),
                  _domain(task, x0, torch.float32))


def _domain(task: Task, x0: torch.Tensor, dtype: torch.dtype):
    """The experiment's domain as a one-problem box around the input x0, or None."""
    from verikit.region import Box

    if task.settings.domain is None:
        return None
    low, high = task.settings.domain
    if bool((x0 < low).any() or (x0 > high).any()):
        raise VerikitError(f"input {task.index} lies outside the domain [{low}, {high}]", path=task.input_file,
                           fix="widen the experiment's domain or fix the input")
    size = x0.numel()
    return Box(torch.full((1, size), low, dtype=dtype), torch.full((1, size), high, dtype=dtype))


MODES = {"bounds": _bounds, "radius": _radius, "verdicts": _verdicts}
