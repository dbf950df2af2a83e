"""The recurrent Align rules (seed-papers.md 6.4): the Add task's targets, and at step 0 Align-zero's and
Align-ada's updates equal BPTT's in float64 while readout-only moves the readout alone."""
from __future__ import annotations

import pytest
import torch

from verikit.trainers.align.recurrent import (RECURRENT_RULES, RecurrentOptions, ReluRNN, add_task, sequence_loss,
                                              train_recurrent)


def test_add_task_targets_follow_the_delayed_sum():
    task = add_task(length=20)
    assert task.x_train.shape == (300, 20) and task.x_test.shape == (100, 20)
    assert set(task.x_train.unique().tolist()) == {0.0, 1.0}
    x, y = task.x_train[7], task.y_train[7]
    for t in range(20):
        expected = 0.5 + (0.5 * x[t - 2] if t >= 2 else 0) - (0.25 * x[t - 5] if t >= 5 else 0)
        assert float(y[t]) == pytest.approx(float(expected))
    assert torch.equal(add_task(length=20).x_test, task.x_test)  # seeded


@pytest.mark.parametrize("rule", ["align-zero", "align-ada"])
def test_step_zero_updates_equal_bptt(rule):
    torch.manual_seed(0)
    model = ReluRNN(12).double()
    task = add_task(length=9)
    x, target = task.x_train[:8].double(), task.y_train[:8].double()
    params = list(model.parameters())
    expected = torch.autograd.grad(sequence_loss(model(x), target), params)
    update, prepare = RECURRENT_RULES[rule]
    got, _ = update(params, prepare(None, params, (), None), x, target)
    scale = max(float(g.abs().max()) for g in expected)
    for a, b in zip(got, expected):
        assert float(b.abs().max()) > 0  # every parameter, the initial state too, gets a signal
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13 * scale)


def test_readout_only_moves_the_readout_and_training_lowers_the_loss():
    torch.manual_seed(1)
    model = ReluRNN(16)
    start = [p.detach().clone() for p in model.parameters()]
    task = add_task(length=12)
    with torch.no_grad():
        before = float(sequence_loss(model(task.x_test), task.y_test))
    result = train_recurrent("last-layer", model, task, RecurrentOptions(epochs=3))
    moved = [not torch.equal(a, b) for a, b in zip(start, model.parameters())]
    assert moved == [False, False, False, True, True, False]
    assert result["best_test_loss"] < before
