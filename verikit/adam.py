"""A minimal Adam (Kingma & Ba 2015) for the few tensors attacks and slope optimisation update.

torch.optim's optimisers import torch._dynamo on construction, which costs seconds of start-up; this
one is the same update rule in a dozen lines, ascending or descending as asked."""
from __future__ import annotations

import torch


class Adam:
    """Adam over a list of tensors; `step(gradients)` updates them in place."""

    def __init__(self, parameters: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, maximize: bool = False, limits: tuple[float, float] | None = None):
        """`limits`: project every parameter into [low, high] after each step."""
        self.parameters, self.lr, self.betas, self.eps, self.limits = parameters, lr, betas, eps, limits
        self.sign = -1.0 if maximize else 1.0
        self.first = [torch.zeros_like(p) for p in parameters]
        self.second = [torch.zeros_like(p) for p in parameters]
        self.steps = 0

    @torch.no_grad()
    def step(self, gradients: list[torch.Tensor | None], lr_scale: float = 1.0) -> None:
        """One update; a None gradient leaves its parameter alone; `lr_scale` decays the rate."""
        self.steps += 1
        beta1, beta2 = self.betas
        correction1, correction2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
        for parameter, gradient, first, second in zip(self.parameters, gradients, self.first, self.second):
            if gradient is None:
                continue
            first.mul_(beta1).add_(gradient, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
            denominator = (second / correction2).sqrt_().add_(self.eps)
            parameter.addcdiv_(first, denominator, value=-self.sign * self.lr * lr_scale / correction1)
            if self.limits is not None:
                parameter.clamp_(*self.limits)
