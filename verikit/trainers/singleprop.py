"""SingleProp (Boopathy et al., AAAI'21; seed-papers.md section 4): a certified regulariser that bounds
the logits with ONE extra forward pass, propagating a per-neuron radius around the clean activations.

Affine layers: r_k = |W| rho_{k-1} (no bias). ReLU with clean pre-activation z and radius v:
stable active (z - v >= 0) keeps v, stable inactive (z + v <= 0) gives 0, unstable neurons take
  fast-lin  3v/4 + z/2 - z^2/(4v)   (half-width of the band s x <= relu <= s (x - l), s = u / (u - l)),
  zero      (z + v) / 2             (band 0 <= relu <= s (x - l)),
  crown     v if z >= 0 else (z + v) / 2  (CROWN's lower slope: 1 where u >= -l; the reference code's
            z > 0 test sends negative-z unstable neurons to 0, which we read as a bug).
Max-pool: r = (maxpool(c + r) - maxpool(c - r)) / 2. A residual block x + f(x): the radii add.
The worst-case logits c - r (true class) and c + r (others) enter
L = (1 - kappa) CE(z_wc) + kappa CE(z_clean). c +- r is not a sound bound: certify the trained net with
verikit's sound methods.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from verikit.errors import VerikitError
from verikit.hookspecs import hookimpl
from verikit.trainers.architectures import Residual
from verikit.trainers.base import Step, TrainOptions, Trainer, clean_loss, mixed_loss

RELU_RULES = ("fast-lin", "zero", "crown")


def relu_radius(z: torch.Tensor, v: torch.Tensor, rule: str) -> torch.Tensor:
    """The radius after a ReLU whose clean input is z with radius v (module docstring)."""
    if rule == "fast-lin":
        unstable = 0.75 * v + z / 2 - z * z / (4 * v.clamp(min=1e-12))
    elif rule == "zero":
        unstable = (z + v) / 2
    elif rule == "crown":
        unstable = torch.where(z >= 0, v, (z + v) / 2)
    else:
        raise VerikitError(f"unknown ReLU radius rule {rule!r}", place="relu_rule", fix=f"use one of {RELU_RULES}")
    return torch.where(z - v >= 0, v, torch.where(z + v <= 0, torch.zeros_like(v), unstable))


def propagate(model: nn.Sequential, x: torch.Tensor, radius: float | torch.Tensor,
              rule: str = "zero") -> tuple[torch.Tensor, torch.Tensor]:
    """Clean logits and their radii: the clean forward pass plus one radius pass through |W|."""
    center, spread = x, torch.broadcast_to(torch.as_tensor(radius, dtype=x.dtype), x.shape)
    for module in model:
        center, spread = _layer(module, center, spread, rule)
    return center, spread


def _layer(module: nn.Module, center: torch.Tensor, spread: torch.Tensor,
           rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's clean output and radius (module docstring)."""
    if isinstance(module, nn.Linear):
        return module(center), F.linear(spread, module.weight.abs())
    if isinstance(module, nn.Conv2d):
        spread = F.conv2d(spread, module.weight.abs(), None, module.stride, module.padding, module.dilation,
                          module.groups)
        return module(center), spread
    if isinstance(module, nn.ReLU):
        return torch.relu(center), relu_radius(center, spread, rule)
    if isinstance(module, nn.MaxPool2d):
        return module(center), (module(center + spread) - module(center - spread)) / 2
    if isinstance(module, nn.Flatten):
        return module(center), module(spread)
    if isinstance(module, Residual):  # x + body(x): the radii of the skip and the body add
        body_center, body_spread = propagate(module.body, center, spread, rule)
        return center + body_center, spread + body_spread
    raise VerikitError(f"SingleProp has no radius rule for {type(module).__name__}", place="model",
                       fix="use Conv2d, Linear, ReLU, MaxPool2d, Flatten and Residual layers")


def worst_case_logits(center: torch.Tensor, spread: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """c - r on the true class, c + r on the others."""
    true = F.one_hot(y, center.shape[1]).to(center.dtype)
    return center + spread * (1 - 2 * true)


@dataclass
class SinglePropOptions(TrainOptions):
    """SingleProp's MNIST-small reference: the CNN-Cert-Zero rule, lr 5e-4; `adaptive` replaces the kappa
    ramp by kappa = L_spec / (L_spec + gamma L_fit) on the validation split after every epoch (1 before)."""

    lr: float = 5e-4
    relu_rule: str = "zero"  # fast-lin | zero | crown
    adaptive: bool = False
    gamma: float = 10.0


class SingleProp(Trainer):
    name = "singleprop"
    summary = "SingleProp certified regulariser (Boopathy et al. 2021): one extra forward pass of radii"
    Options = SinglePropOptions

    def check(self, options: SinglePropOptions) -> None:
        if options.relu_rule not in RELU_RULES:
            raise VerikitError(f"unknown ReLU radius rule {options.relu_rule!r}", place="relu_rule",
                               fix=f"use one of: {', '.join(RELU_RULES)}")

    def kappa(self, scheduled, options, state):
        return state.get("kappa", 1.0) if options.adaptive else scheduled

    def loss(self, model, x, y, step):
        if step.eps <= 0 or step.kappa >= 1.0:
            logits = model(x)
            return clean_loss(logits, y), logits
        center, spread = propagate(model, x, step.eps, step.options.relu_rule)
        robust = F.cross_entropy(worst_case_logits(center, spread, y), y)
        return mixed_loss(clean_loss(center, y), robust, step.kappa), center

    @torch.no_grad()
    def end_epoch(self, model, data, step: Step) -> None:
        """Adaptive kappa from the validation losses at the current eps."""
        if not step.options.adaptive or len(data.y_val) == 0:
            return
        center, spread = propagate(model, data.x_val, step.eps, step.options.relu_rule)
        fit = float(F.cross_entropy(center, data.y_val))
        spec = float(F.cross_entropy(worst_case_logits(center, spread, data.y_val), data.y_val))
        step.state["kappa"] = spec / (spec + step.options.gamma * fit)


@hookimpl
def verikit_trainers(register) -> None:
    register(SingleProp())
