"""The eps / kappa / learning-rate schedule of certified training, in fractions of the whole run.

SingleProp's MNIST reference runs 100 epochs of 550 steps (55,000 steps): eps = 0 and kappa = 1 for the
first 2,000, then both ramp linearly until step 12,000 (eps to its target, kappa to 0.5), and the
learning rate drops by 10 at steps 15,000 and 25,000. The defaults below are those steps / 55,000.
"""
from __future__ import annotations

from dataclasses import dataclass

REFERENCE_STEPS = 55_000  # 100 epochs x 550 steps


@dataclass
class Schedule:
    """Where each phase ends, as fractions of training (0 = first step, 1 = the end)."""

    warmup: float = 2_000 / REFERENCE_STEPS  # eps = 0, kappa = 1 before this
    ramp_end: float = 12_000 / REFERENCE_STEPS  # eps and kappa reach their targets here
    lr_drops: tuple[float, ...] = (15_000 / REFERENCE_STEPS, 25_000 / REFERENCE_STEPS)  # lr /= 10 at each

    def ramp(self, fraction: float) -> float:
        """0 before the warm-up ends, 1 after the ramp, linear between."""
        if fraction < self.warmup:
            return 0.0
        if fraction >= self.ramp_end or self.ramp_end <= self.warmup:
            return 1.0
        return (fraction - self.warmup) / (self.ramp_end - self.warmup)

    def eps(self, fraction: float, target: float) -> float:
        """The training eps at this point: 0 -> target along the ramp."""
        return target * self.ramp(fraction)

    def kappa(self, fraction: float, end: float) -> float:
        """The clean-loss weight: 1 -> end along the ramp."""
        return 1.0 + (end - 1.0) * self.ramp(fraction)

    def lr_factor(self, fraction: float) -> float:
        """The learning rate's multiplier: 1, then divided by 10 at each drop passed."""
        return 0.1 ** sum(fraction >= drop for drop in self.lr_drops)
