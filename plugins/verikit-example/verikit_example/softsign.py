"""Softsign y = x / (1 + |x|) as a verikit layer rule.

Softsign is increasing, odd, convex for x <= 0 and concave for x >= 0, like tanh, so verikit's public
S-shaped machinery gives its interval (monotone) and its tangent/chord relaxation; the plugin only
states the function and its derivative, and registers the rule through verikit's `verikit_layers` hook.
"""
from __future__ import annotations

import torch

from verikit.hookspecs import hookimpl
from verikit.layers.s_shaped import SShapedRule


class Softsign(SShapedRule):
    """ONNX Softsign: x / (1 + |x|)."""

    op_types = ("Softsign",)

    @staticmethod
    def function(z: torch.Tensor) -> torch.Tensor:
        return z / (1 + z.abs())

    @staticmethod
    def derivative(z: torch.Tensor) -> torch.Tensor:
        return (1 + z.abs()).pow(-2)


@hookimpl
def verikit_layers(register) -> None:
    register(Softsign)
