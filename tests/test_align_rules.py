"""The Align learning rules (seed-papers.md 6.3, 7.4): at step 0 Align-zero, Align-ada (and Align-prop)
equal backprop in float64; after training has moved the weights, Align-ada's update uses the live
activities and Align-zero's the frozen copy's; the frozen copy and the FA / DFA feedback never change."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from verikit.trainers.align.forward import Layout, squared_error, targets
from verikit.trainers.align.network import UnitBatchNorm, ntk_conv
from verikit.trainers.align.plugin import AlignOptions, train_network
from verikit.trainers.align.rules import RULES
from verikit.trainers.data import load_data

SHAPE = (1, 8, 8)


def network(width: int = 6, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(*ntk_conv(SHAPE, 10, width)).double().train()


def batch(count: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, *SHAPE, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return x, labels, targets(labels, 10, torch.float64)


def assert_same_update(update: torch.Tensor, expected: torch.Tensor, scale: float) -> None:
    """Equal up to float64 rounding (conv biases' true update is 0: batch norm removes them)."""
    torch.testing.assert_close(update, expected, rtol=1e-10, atol=1e-13 * scale)


def update(name: str, model: nn.Sequential, x: torch.Tensor, target: torch.Tensor, state=None):
    rule, params = RULES[name], list(model.parameters())
    layout = Layout.of(model)
    state = state if state is not None else rule.prepare(layout, params, SHAPE, torch.Generator().manual_seed(3))
    return rule.update(layout, params, state, x, target)[0]


@pytest.mark.parametrize("name", ["align-zero", "align-ada", "align-prop", "backprop"])
def test_step_zero_updates_equal_backprop(name):
    model = network()
    x, _, target = batch()
    expected = torch.autograd.grad(squared_error(model(x), target), list(model.parameters()))
    scale = max(float(g.abs().max()) for g in expected)
    for got, want in zip(update(name, model, x, target), expected):
        assert_same_update(got, want, scale)


def test_fa_dfa_differ_from_backprop_below_the_readout_and_last_layer_trains_only_it():
    model = network()
    x, _, target = batch()
    expected = torch.autograd.grad(squared_error(model(x), target), list(model.parameters()))
    for name in ("fa", "dfa"):
        got = update(name, model, x, target)
        assert not torch.allclose(got[0], expected[0], rtol=0.1)  # first conv: a different signal
        assert_same_update(got[-2], expected[-2], 1.0)  # the readout gets the true error
    got = update("last-layer", model, x, target)
    assert all(g is None for g in got[:-2]) and torch.allclose(got[-2], expected[-2], rtol=1e-10)


def captured(model: nn.Sequential, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The module forward's batch-norm outputs, pooled activity and output (batch statistics)."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o))
             for m in model if isinstance(m, (UnitBatchNorm, nn.Flatten))]
    output = model(x)
    for hook in hooks:
        hook.remove()
    return seen[:-1], seen[-1], output


def block_update(model: nn.Sequential, activity: torch.Tensor, signal: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The second block's weight and bias update for `signal` at its batch-norm output, fed `activity`."""
    conv, norm = model[3], model[4]
    return torch.autograd.grad(norm(conv(torch.relu(activity.detach()))), [conv.weight, conv.bias], signal)


def test_align_ada_uses_live_activities_and_align_zero_the_frozen_ones():
    initial = network()
    model = copy.deepcopy(initial)
    with torch.no_grad():
        for p in model.parameters():  # training has moved every weight
            p.add_(0.5 * torch.randn_like(p))
    x, _, target = batch()
    state = RULES["align-ada"].prepare(Layout.of(initial), list(initial.parameters()), SHAPE, None)
    live_norms, live_pooled, live_output = captured(model, x)
    error = 2 * (live_output.detach() - target) / target.numel()
    frozen_norms, frozen_pooled, frozen_output = captured(initial, x)
    signal, = torch.autograd.grad(frozen_output, frozen_norms[1], error)  # N0's, at the third conv's input
    expected = {"align-ada": (block_update(model, live_norms[0], signal), live_pooled),
                "align-zero": (block_update(initial, frozen_norms[0], signal), frozen_pooled)}
    scale = float(expected["align-ada"][0][0].abs().max())
    assert not torch.allclose(expected["align-ada"][0][0], expected["align-zero"][0][0], rtol=0.05)
    for name, ((weight, bias), pooled) in expected.items():
        got = update(name, model, x, target, state)
        assert_same_update(got[2], weight, scale)
        assert_same_update(got[3], bias, scale)
        readout = error.T @ pooled.detach() * model[-1].scale
        assert_same_update(got[-2], readout, float(readout.abs().max()))


def test_frozen_copy_and_feedback_never_change():
    data = load_data("digits")
    options = AlignOptions(epochs=1, lr=2.0, batch_size=100, seed=5)
    for name in ("align-zero", "align-ada", "align-prop", "fa", "dfa"):
        model = network(width=4).float()
        start = [p.detach().clone() for p in model.parameters()]
        before = RULES[name].prepare(Layout.of(model), list(model.parameters()), SHAPE,
                                     torch.Generator().manual_seed(options.seed + 1))
        after = train_network(RULES[name], model, data, options, progress=_silent())
        assert any(not torch.equal(a, b) for a, b in zip(start, model.parameters())), name
        assert before.keys() == after.keys() and before
        for key in before:
            assert all(torch.equal(a, b) for a, b in zip(before[key], after[key])), (name, key)
        if "frozen" in after:
            assert all(torch.equal(a, b) for a, b in zip(after["frozen"], start))
        if name == "align-prop":
            assert all(torch.equal(a, b) for a, b in zip(after["feedback"], start[0::2]))
        if name == "fa":
            assert [f.shape for f in after["feedback"]] == [w.shape for w in start[0::2]]
            assert not any(torch.allclose(f, w) for f, w in zip(after["feedback"], start[0::2]))


def test_dfa_projections_have_the_reference_scale():
    model = network(width=32)
    state = RULES["dfa"].prepare(Layout.of(model), list(model.parameters()), SHAPE, torch.Generator().manual_seed(0))
    sizes = [32 * 8 * 8, 32 * 4 * 4, 32 * 2 * 2]  # C_l H_l W_l after strides 1, 2, 2
    assert [tuple(b.shape) for b in state["projections"]] == [(10, n) for n in sizes]
    for projection, n in zip(state["projections"], sizes):
        assert float(projection.var()) * n == pytest.approx(1.0, rel=0.15)


def _silent():
    from verikit.trainers.base import Progress

    return Progress()
