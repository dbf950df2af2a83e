"""Architectures to train, as plain nn.Sequential of Conv2d / Linear / ReLU / Flatten and residual
blocks (ops verikit verifies). Shapes follow seed-papers.md 4.3 and 2.1, with paddings adapted so 8x8
inputs work.

Weights start as in SingleProp's reference: N(0, 1/fan_in), zero biases.
"""
from __future__ import annotations

from math import prod
from typing import Callable

import torch
from torch import nn

from verikit.errors import VerikitError
from verikit.trainers.align.network import ntk_conv

Builder = Callable[[tuple[int, ...], int], list[nn.Module]]


def _dense_head(features: int, widths: tuple[int, ...], classes: int) -> list[nn.Module]:
    """Flatten, then Linear + ReLU for each width, then the Linear classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    for width in widths:
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    return layers + [nn.Linear(features, classes)]


def _convs(channels: int, specs: tuple[tuple[int, int, int, int], ...]) -> list[nn.Module]:
    """Conv2d + ReLU for each (filters, kernel, stride, padding)."""
    layers: list[nn.Module] = []
    for filters, kernel, stride, padding in specs:
        layers += [nn.Conv2d(channels, filters, kernel, stride, padding), nn.ReLU()]
        channels = filters
    return layers


def _with_head(shape: tuple[int, ...], convs: list[nn.Module], widths: tuple[int, ...],
               classes: int) -> list[nn.Module]:
    """Convolutions, then a dense head sized by running the convolutions once."""
    with torch.no_grad():
        features = prod(nn.Sequential(*convs)(torch.zeros(1, *shape)).shape[1:]) if convs else prod(shape)
    return convs + _dense_head(features, widths, classes)


class Residual(nn.Module):
    """A residual block: x + body(x), exported as an ONNX Add of the block's input and its body."""

    def __init__(self, *body: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def mlp(shape: tuple[int, ...], classes: int) -> list[nn.Module]:
    """Two hidden layers of 100."""
    return _dense_head(prod(shape), (100, 100), classes)


def mnist_small(shape: tuple[int, ...], classes: int) -> list[nn.Module]:
    """IBP's / SingleProp's Small: Conv 16@4x4/2, Conv 32@4x4/1 (padding 1, for 8x8 inputs), FC100, FC10."""
    return _with_head(shape, _convs(shape[0], ((16, 4, 2, 1), (32, 4, 1, 1))), (100,), classes)


def mnist_medium(shape: tuple[int, ...], classes: int) -> list[nn.Module]:
    """IBP's Medium: 32@3/1, 32@4/2, 64@3/1, 64@4/2 (padding 1), FC512, FC512, FC10."""
    convs = _convs(shape[0], ((32, 3, 1, 1), (32, 4, 2, 1), (64, 3, 1, 1), (64, 4, 2, 1)))
    return _with_head(shape, convs, (512, 512), classes)


def cnn_4layer_5_3(shape: tuple[int, ...], classes: int) -> list[nn.Module]:
    """CNN-Cert's mnist_cnn_4layer_5_3: three convs 5@3x3 stride 1 VALID, then Dense(classes)."""
    return _with_head(shape, _convs(shape[0], ((5, 3, 1, 0),) * 3), (), classes)


def mnist_resnet(shape: tuple[int, ...], classes: int) -> list[nn.Module]:
    """A small ResNet in CNN-Cert's style: Conv 8@3x3, two identity blocks x + conv(relu(conv(relu(x)))),
    all 3x3 SAME, then ReLU, FC100, FC10."""
    def block() -> Residual:
        return Residual(nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1))

    convs = [nn.Conv2d(shape[0], 8, 3, 1, 1), block(), block(), nn.ReLU()]
    return _with_head(shape, convs, (100,), classes)


def small_gap(shape: tuple[int, ...], classes: int) -> list[nn.Module]:
    """Int / Int2's "Small" (seed-papers.md 5.3): 16@4/2, 32@4/2 (ReLU), 100@7/1 SAME with no activation,
    global average pooling, a bias-free linear head (so each logit is the spatial mean of its CAM)."""
    return _convs(shape[0], ((16, 4, 2, 1), (32, 4, 2, 1))) + [
        nn.Conv2d(32, 100, 7, 1, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(100, classes, bias=False)]


ARCHITECTURES: dict[str, Builder] = {"mlp": mlp, "mnist-small": mnist_small, "mnist-medium": mnist_medium,
                                     "cnn-4layer-5-3": cnn_4layer_5_3, "mnist-resnet": mnist_resnet,
                                     "small-gap": small_gap, "ntk-conv": ntk_conv}


def build(name: str, shape: tuple[int, ...], classes: int, seed: int = 0) -> nn.Sequential:
    """The architecture `name` (options after a colon: ntk-conv:width=128) for inputs `shape` (C, H, W),
    initialised from `seed`."""
    name, _, given = name.partition(":")
    settings = dict(item.partition("=")[::2] for item in given.split(",") if item)
    if name not in ARCHITECTURES:
        raise VerikitError(f"no architecture named {name!r}", place="--arch",
                           fix=f"choose one of: {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)
    try:
        model = nn.Sequential(*ARCHITECTURES[name](tuple(shape), classes, **settings))
    except TypeError as error:
        raise VerikitError(f"architecture {name!r} does not take the options {', '.join(settings)}", place="--arch",
                           fix="only ntk-conv takes one: ntk-conv:width=128") from error
    except RuntimeError as error:
        raise VerikitError(f"architecture {name!r} does not fit inputs of shape {tuple(shape)} ({error})",
                           place="--arch", fix="choose a smaller architecture or larger inputs (size=16)") from error
    initialise(model)
    return model


@torch.no_grad()
def initialise(model: nn.Module) -> None:
    """N(0, 1/fan_in) weights and zero biases (SingleProp's reference initialisation)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fan_in = prod(module.weight.shape[1:])
            module.weight.normal_(0.0, fan_in ** -0.5)
            if module.bias is not None:
                module.bias.zero_()
