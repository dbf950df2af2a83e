"""The learning rules compared in the Align experiments (seed-papers.md 6.3, 7.6), each a function from a
batch to the update of every parameter (None: the parameter stays). All send the same output error
e = d loss / d f backward; they differ in the weights, derivatives and activities it meets on the way:

- backprop: the live network's gradient.
- align-zero: the gradient the frozen initial copy N0 receives for the live error (N0's activities,
  batch-norm statistics, ReLU derivatives and weights; only the error is live), applied to the live net.
- align-ada: N0's backward signal handed to each live layer where the reference feeds N0 the live activity
  (x0 + x - stop_gradient(x)): at every later conv's input (the batch-norm output below, before N0's ReLU)
  and at the readout's input (the pooled activity, after the live ReLU); from there the live layer's own
  batch norm and its live, stop-gradient'd input make the update.
- align-prop / fa: backprop through the live derivatives and activities, but down through fixed feedback
  weights: the initial forward weights (align-prop) or independent N(0, 1) draws with the same scaling (fa).
- dfa: the error projected to every block's post-ReLU activity by fixed B_l ~ N(0, 1 / (H W C_l)).
- last-layer: only the readout learns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from verikit.trainers.align.forward import Layout, forward, output_gradient

Gradients = list[torch.Tensor | None]
State = dict[str, list[torch.Tensor]]


def _grad(outputs: list[torch.Tensor], inputs: list[torch.Tensor], signals: list[torch.Tensor]) -> Gradients:
    """The vector-Jacobian product of `outputs` with `signals`, None where an input is not reached."""
    return list(torch.autograd.grad(outputs, inputs, signals, allow_unused=True))


def backprop(layout: Layout, params: list[torch.Tensor], state: State, x: torch.Tensor,
             target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    """The live network's gradient."""
    trace = forward(layout, params, x)
    error = output_gradient(trace.output, target)
    return _grad([trace.output], params, [error]), trace.output.detach()


def frozen(state: State) -> list[torch.Tensor]:
    """The frozen copy's parameters as fresh leaves that take gradients (the stored tensors never change)."""
    return [p.detach().requires_grad_() for p in state["frozen"]]


def align_zero(layout: Layout, params: list[torch.Tensor], state: State, x: torch.Tensor,
               target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    """N0's gradient for the live network's error, with N0's activities and backward pass."""
    with torch.no_grad():
        output = forward(layout, params, x).output
    initial = frozen(state)
    return _grad([forward(layout, initial, x).output], initial, [output_gradient(output, target)]), output


def frozen_signals(layout: Layout, state: State, x: torch.Tensor, error: torch.Tensor) -> list[torch.Tensor]:
    """N0's backward signal for `error` at the inputs of its later convs and of its readout."""
    trace = forward(layout, frozen(state), x)
    return _grad([trace.output], [*trace.normalised[:-1], trace.pooled], [error])


def align_ada(layout: Layout, params: list[torch.Tensor], state: State, x: torch.Tensor,
              target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    """N0's backward signal at each live layer's output; live activities below the update."""
    trace = forward(layout, params, x, detach_inputs=True)
    error = output_gradient(trace.output, target)
    signals = frozen_signals(layout, state, x, error)
    return _grad([*trace.normalised[:-1], trace.pooled, trace.output], params, [*signals, error]), \
        trace.output.detach()


def feedback_alignment(layout: Layout, params: list[torch.Tensor], state: State, x: torch.Tensor,
                       target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    """Backprop through the live derivatives, down through `state['feedback']` (align-prop, fa)."""
    trace = forward(layout, params, x, feedback=state["feedback"])
    return _grad([trace.output], params, [output_gradient(trace.output, target)]), trace.output.detach()


def direct_feedback_alignment(layout: Layout, params: list[torch.Tensor], state: State, x: torch.Tensor,
                              target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    """The error projected to each block's post-ReLU activity by `state['projections']`."""
    trace = forward(layout, params, x, detach_inputs=True)
    error = output_gradient(trace.output, target)
    activities = [torch.relu(n) for n in trace.normalised]
    signals = [(error @ projection).view_as(a) for a, projection in zip(activities, state["projections"])]
    return _grad([*activities, trace.output], params, [*signals, error]), trace.output.detach()


def last_layer(layout: Layout, params: list[torch.Tensor], state: State, x: torch.Tensor,
               target: torch.Tensor) -> tuple[Gradients, torch.Tensor]:
    """The readout's gradient; nothing else moves."""
    trace = forward(layout, params, x, detach_inputs=True)
    return _grad([trace.output], params, [output_gradient(trace.output, target)]), trace.output.detach()


def no_state(layout: Layout | None, params: list[torch.Tensor], shape: tuple[int, ...],
             generator: torch.Generator | None) -> State:
    """Rules that keep nothing across steps."""
    return {}


def frozen_copy(layout: Layout, params: list[torch.Tensor], shape: tuple[int, ...],
                generator: torch.Generator | None) -> State:
    """N0: the parameters at initialisation, kept apart from the live ones."""
    return {"frozen": [p.detach().clone() for p in params]}


def initial_feedback(layout: Layout, params: list[torch.Tensor], shape: tuple[int, ...],
                     generator: torch.Generator | None) -> State:
    """Align-prop's feedback: each conv's and the readout's initial forward weight."""
    return {"feedback": [w.detach().clone() for w in params[0::2]]}


def random_feedback(layout: Layout, params: list[torch.Tensor], shape: tuple[int, ...],
                    generator: torch.Generator | None) -> State:
    """FA's feedback: N(0, 1) weights shaped like the forward ones (the layer applies the same scaling)."""
    return {"feedback": [torch.randn(w.shape, generator=generator, dtype=w.dtype) for w in params[0::2]]}


def random_projections(layout: Layout, params: list[torch.Tensor], shape: tuple[int, ...],
                       generator: torch.Generator | None) -> State:
    """DFA's B_l ~ N(0, 1 / (H W C_l)): [classes, C_l H_l W_l], one per block."""
    with torch.no_grad():
        trace = forward(layout, params, torch.zeros(2, *shape, dtype=params[0].dtype))
    classes = trace.output.shape[1]
    return {"projections": [torch.randn(classes, n[0].numel(), generator=generator, dtype=n.dtype)
                            / n[0].numel() ** 0.5 for n in trace.normalised]}


@dataclass(frozen=True)
class Rule:
    """A learning rule: `update(layout, params, state, x, target) -> (updates, output)` and the fixed
    state it keeps across steps (`prepare(layout, params, input_shape, generator)`, saved in checkpoints)."""

    name: str
    summary: str
    update: Callable[..., tuple[Gradients, torch.Tensor]]
    prepare: Callable[..., State] = field(default=no_state)


RULES = {rule.name: rule for rule in (
    Rule("backprop", "backpropagation, squared error and plain SGD on the NTK conv net (the Align baseline)",
         backprop),
    Rule("align-zero", "Align-zero (Boopathy & Fiete): the frozen initial copy's gradient for the live error",
         align_zero, frozen_copy),
    Rule("align-ada", "Align-ada (Boopathy & Fiete): live activities, the frozen initial copy's backward signal",
         align_ada, frozen_copy),
    Rule("align-prop", "feedback through the initial forward weights, live derivatives and activities",
         feedback_alignment, initial_feedback),
    Rule("fa", "feedback alignment: fixed random feedback weights (Lillicrap et al. 2016)",
         feedback_alignment, random_feedback),
    Rule("dfa", "direct feedback alignment: the error projected to every layer (Nokland 2016)",
         direct_feedback_alignment, random_projections),
    Rule("last-layer", "only the readout learns (the floor of the Align comparison)", last_layer),
)}
