"""TRADES (Zhang et al. 2019) as the Int reference trains it (seed-papers.md 5.3, 7.6): CE(x) + beta KL(p(x)
|| p(x')), beta = 1, with x' from a random start ascending the KL by sign steps whose gradient is taken
w.r.t. x' (SingleProp's script takes it w.r.t. the clean input, a bug not copied here)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from verikit.hookspecs import hookimpl
from verikit.trainers.ascent import sign_ascent
from verikit.trainers.base import Step, Trainer, clean_loss
from verikit.trainers.interpret import DefenceOptions


@dataclass
class TradesOptions(DefenceOptions):
    """The Int reference's settings plus the KL term's weight."""

    divergence_weight: float = 1.0  # beta


def divergence(clean_logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) || softmax(perturbed)) of each input: [B]."""
    clean = F.log_softmax(clean_logits, dim=1)
    return (clean.exp() * (clean - F.log_softmax(perturbed_logits, dim=1))).sum(1)


class Trades(Trainer):
    name = "trades"
    summary = "TRADES (Zhang et al. 2019): CE(x) + KL(p(x) || p(x')), x' maximising the KL"
    Options = TradesOptions

    def loss(self, model, x, y, step: Step):
        options = step.options
        logits = model(x)
        fit = clean_loss(logits, y)
        if step.eps <= 0:
            return fit, logits
        clean = logits.detach()
        perturbed = sign_ascent(lambda z: divergence(clean, model(z)).sum(), x, step.eps, options.steps,
                                options.step_size, step.domain, options.random_start)
        return fit + options.divergence_weight * divergence(logits, model(perturbed)).mean(), logits


@hookimpl
def verikit_trainers(register) -> None:
    register(Trades())
