"""The baseline trainers SingleProp is compared with: standard, PGD adversarial training (Madry et al.),
IBP (Gowal et al.) and CROWN-IBP (Zhang et al.). The certified ones take their bounds from verikit's
own engines (`verikit.trainers.engine`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from verikit.hookspecs import hookimpl
from verikit.trainers.ascent import sign_ascent
from verikit.trainers.base import Step, TrainOptions, Trainer, clean_loss, mixed_loss
from verikit.trainers.engine import crown_ibp_margin, ibp_margin, input_box, live_graph, margin_rows


class Standard(Trainer):
    name = "standard"
    summary = "cross-entropy on clean inputs"
    uses_eps = False

    def loss(self, model, x, y, step):
        logits = model(x)
        return clean_loss(logits, y), logits


@dataclass
class PGDOptions(TrainOptions):
    """PGD as SingleProp's reference runs it: no random start, 40 steps of 0.01 ([0, 1] scale), the
    same eps ramp; the loss is the cross-entropy at the attack's point only."""

    steps: int = 40
    step_size: float = 0.01
    random_start: bool = False


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, options: PGDOptions,
        domain: tuple[float, float]) -> torch.Tensor:
    """The L-inf PGD point maximising the cross-entropy within eps of x and inside the domain."""
    return sign_ascent(lambda point: F.cross_entropy(model(point), y), x, eps, options.steps, options.step_size,
                       domain, options.random_start)


class PGDAT(Trainer):
    name = "pgd-at"
    summary = "adversarial training on PGD points (Madry et al. 2018)"
    Options = PGDOptions

    def loss(self, model, x, y, step):
        if step.eps > 0:
            x = pgd(model, x, y, step.eps, step.options, step.domain)
        logits = model(x)
        return clean_loss(logits, y), logits


class CertifiedTrainer(Trainer):
    """A trainer whose robust loss is CE(-lower bound of y_true - y_j) on the data-clipped eps box."""

    def margin(self, graph, box, rows, step: Step) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model, x, y, step):
        logits = model(x)
        clean = clean_loss(logits, y)
        if step.eps <= 0 or step.kappa >= 1.0:
            return clean, logits  # plain cross-entropy while eps = 0
        graph = live_graph(model, tuple(x.shape[1:]))
        lower = self.margin(graph, input_box(x, step.eps, step.domain), margin_rows(y, logits.shape[1]), step)
        robust = F.cross_entropy(-lower, y)  # the row y is 0: CE([0, -lb_j], true) over the other rows
        return mixed_loss(clean, robust, step.kappa), logits


class IBPTrainer(CertifiedTrainer):
    name = "ibp"
    summary = "interval bound propagation training (Gowal et al. 2018), kappa 1 -> kappa_end"

    def margin(self, graph, box, rows, step):
        return ibp_margin(graph, box, rows)


class CrownIBPTrainer(CertifiedTrainer):
    name = "crown-ibp"
    summary = "CROWN-IBP (Zhang et al. 2020): beta * CROWN-IBP + (1 - beta) * IBP, beta 1 -> 0 with the eps ramp"

    def margin(self, graph, box, rows, step):
        beta = 1.0 - step.eps / step.target_eps if step.target_eps > 0 else 0.0
        return crown_ibp_margin(graph, box, rows, beta)


@hookimpl
def verikit_trainers(register) -> None:
    for trainer in (Standard(), PGDAT(), IBPTrainer(), CrownIBPTrainer()):
        register(trainer)
