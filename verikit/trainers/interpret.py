"""The interpretation-aware defence (Boopathy et al., ICML'20; seed-papers.md 5.3) as the trainer
`interpret`, one `variant` an objective:

  int       CE(x) + lambda max_{x'} D(x, x'), PGD ascending the whole objective
  int-one   the same with D's true-class term only
  int-adv   CE(x') + lambda D(x, x'), x' ascending that objective
  int2      CE(x) + lambda D(x, x'), x' from plain PGD on CE(x')
  int2-adv  CE(x') + lambda D(x, x'), x' as int2's
  ig-norm   CE(x) + w ||IG of the loss from x to x'||_1 (5-step Riemann sum), x' ascending the objective

D = ||CAM_y(x') - CAM_y(x)||_1 + sum_{k != y} pbar_k ||CAM_k(x') - CAM_k(x)||_1, summed over positions,
averaged over the batch; lambda = 0.01; pbar = softmax of the perturbed logits over the other classes,
not detached. The model needs a GAP + bias-free linear head (`--arch small-gap`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from verikit.errors import VerikitError
from verikit.hookspecs import hookimpl
from verikit.trainers.ascent import sign_ascent
from verikit.interpret.discrepancy import class_distances, soft_target_weights, training_discrepancy
from verikit.interpret.maps import path_gradients
from verikit.interpret.network import SplitNetwork, from_sequential
from verikit.trainers.base import Step, Trainer, clean_loss
from verikit.trainers.baselines import PGDOptions, pgd
from verikit.trainers.schedule import Schedule

REFERENCE_STEPS = 110_000  # the reference's MNIST runs: 100 epochs of 1,100 batches of 50
VARIANTS = ("int", "int-one", "int-adv", "int2", "int2-adv", "ig-norm")


def reference_schedule() -> Schedule:
    """eps 0 for 2,000 steps, ramped to its target by step 10,000, a constant learning rate."""
    return Schedule(warmup=2_000 / REFERENCE_STEPS, ramp_end=10_000 / REFERENCE_STEPS, lr_drops=())


@dataclass
class DefenceOptions(PGDOptions):
    """The Int reference's MNIST settings (train.py): Adam 1e-4, batch 50, PGD 40 sign steps of 0.01
    from a random start (only while eps > 0), the eps ramp of `reference_schedule`."""

    lr: float = 1e-4
    batch_size: int = 50
    schedule: Schedule = field(default_factory=reference_schedule)
    steps: int = 40
    step_size: float = 0.01
    random_start: bool = True


@dataclass
class InterpretOptions(DefenceOptions):
    """Which objective (`variant`, see the module docstring) and its weights."""

    variant: str = "int"
    discrepancy_weight: float = 0.01  # lambda
    ig_steps: int = 5  # Riemann steps of IG-Norm's path integral
    ig_weight: float = 0.02  # the reference differentiates the batch-mean loss: 1/50 at its batch of 50


def interpretation_objective(network: SplitNetwork, perturbed: torch.Tensor, y: torch.Tensor,
                             clean_cam: torch.Tensor, clean_fit: torch.Tensor,
                             options: InterpretOptions) -> torch.Tensor:
    """CE (at x, or at x' for the -adv variants) + lambda x the batch mean of D(x, x')."""
    _, cam, logits = network.features_and_cam(perturbed)
    distances = class_distances(clean_cam, cam, "l1")
    pbar = None if options.variant == "int-one" else soft_target_weights(logits, y)
    fit = clean_loss(logits, y) if options.variant.endswith("-adv") else clean_fit
    return fit + options.discrepancy_weight * training_discrepancy(distances, y, pbar).mean()


def ig_norm(model: torch.nn.Module, x: torch.Tensor, perturbed: torch.Tensor, y: torch.Tensor,
            steps: int) -> torch.Tensor:
    """The batch mean of ||IG||_1 of each input's cross-entropy along x -> x' (differentiable)."""
    gradients = path_gradients(lambda z: F.cross_entropy(model(z), y, reduction="none"), x, perturbed, steps,
                               create_graph=True)
    return gradients.abs().flatten(1).sum(1).mean()


class Interpret(Trainer):
    name = "interpret"
    summary = "interpretation-aware defence Int / Int2 (Boopathy et al. 2020); variant int|int-one|int-adv|int2|" \
              "int2-adv|ig-norm"
    Options = InterpretOptions
    architecture = "small-gap"  # CAM needs global average pooling and a bias-free linear head

    def check(self, options: InterpretOptions) -> None:
        if options.variant not in VARIANTS:
            raise VerikitError(f"unknown interpret variant {options.variant!r}", place="variant",
                               fix=f"use one of: {', '.join(VARIANTS)}")
        if options.steps < 1 or options.step_size <= 0 or options.ig_steps < 1:
            raise VerikitError("steps and ig_steps must be at least 1 and step_size above 0", place="options",
                               fix="correct the attack's settings")

    def loss(self, model, x, y, step: Step):
        options = step.options
        if options.variant == "ig-norm":
            return self._ig_loss(model, x, y, step)
        network = from_sequential(model, tuple(x.shape[1:]))
        _, clean_cam, logits = network.features_and_cam(x)
        fit = clean_loss(logits, y)
        if step.eps <= 0:
            return fit, logits
        if options.variant.startswith("int2"):
            perturbed = pgd(model, x, y, step.eps, options, step.domain)
        else:
            constant_cam, constant_fit = clean_cam.detach(), fit.detach()
            perturbed = sign_ascent(
                lambda z: interpretation_objective(network, z, y, constant_cam, constant_fit, options), x,
                step.eps, options.steps, options.step_size, step.domain, options.random_start)
        return interpretation_objective(network, perturbed, y, clean_cam, fit, options), logits

    def _ig_loss(self, model, x, y, step: Step):
        """IG-Norm: CE(x) + w ||IG(x -> x')||_1, x' ascending that objective."""
        options = step.options
        logits = model(x)
        fit = clean_loss(logits, y)
        if step.eps <= 0:
            return fit, logits
        perturbed = sign_ascent(lambda z: ig_norm(model, x, z, y, options.ig_steps), x, step.eps, options.steps,
                                options.step_size, step.domain, options.random_start)
        return fit + options.ig_weight * ig_norm(model, x, perturbed, y, options.ig_steps), logits


@hookimpl
def verikit_trainers(register) -> None:
    register(Interpret())
