"""Datasets for training, all offline: a record with fixed train / validation / test splits, and the
sources that make them (registered through the `verikit_datasets` hook; built-ins in
`verikit.trainers.datasets`).

Inputs are float32 [N, C, H, W] in the value domain (lower, upper); eps is measured in the [0, 1]
input scale, so an eps of 0.1 on a domain of width 1 moves every pixel by at most 0.1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from verikit.errors import VerikitError

SPLIT = (0.7, 0.1, 0.2)  # train, validation, test


class DataError(VerikitError):
    """A dataset cannot be made or read, or does not fit what training needs."""


@dataclass
class Dataset:
    """One dataset, split once by its seed."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]  # (C, H, W), without the sample dimension
    classes: int
    domain: tuple[float, float] = (0.0, 1.0)  # every input value lies in [lower, upper]
    mean: tuple[float, ...] = ()  # per channel, of the training split
    std: tuple[float, ...] = ()
    eps_scale: float = 1.0  # eps in the [0, 1] scale times this is eps in input units (the domain's width)

    def check_eps(self, eps: float) -> None:
        """eps must be at least 0 and leave room inside the domain."""
        width = (self.domain[1] - self.domain[0]) / self.eps_scale
        if not 0.0 <= eps <= width:
            raise DataError(f"eps {eps} is outside the data domain of {self.name} ([0, {width:g}] in the "
                            "[0, 1] input scale)", place="eps", fix=f"choose an eps between 0 and {width:g}")


def split(name: str, x: np.ndarray, y: np.ndarray, seed: int, classes: int | None = None,
          domain: tuple[float, float] = (0.0, 1.0)) -> Dataset:
    """Shuffle with `seed`, then cut into train / validation / test (SPLIT) and record the statistics."""
    order = np.random.default_rng(seed).permutation(len(y))
    x = torch.as_tensor(np.ascontiguousarray(x[order]), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y)[order], dtype=torch.int64)
    first = int(SPLIT[0] * len(y))
    second = first + int(SPLIT[1] * len(y))
    train = x[:first]
    channels = train.transpose(0, 1).reshape(x.shape[1], -1)
    return Dataset(name, train, y[:first], x[first:second], y[first:second], x[second:], y[second:],
                   input_shape=tuple(x.shape[1:]), classes=classes or int(y.max()) + 1, domain=domain,
                   mean=tuple(channels.mean(1).tolist()), std=tuple(channels.std(1).tolist()),
                   eps_scale=domain[1] - domain[0])


@dataclass
class DataSource:
    """A registered dataset: `make(seed, **options)` returns the Dataset (options are strings from
    `--data name:key=value,...` or values from a config)."""

    name: str
    summary: str
    make: Callable[..., Dataset]
    kind: ClassVar[str] = "dataset"


def parse_data(text: str) -> tuple[str, dict[str, str]]:
    """'digits:size=16' -> ('digits', {'size': '16'}); a path to a .npz is its own name."""
    if text.endswith(".npz"):
        return "npz", {"path": text}
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            raise DataError(f"data option {item!r} is not key=value", place="--data",
                            fix="write e.g. digits:size=16")
        options[key.strip()] = value.strip()
    return name.strip(), options


def load_data(text: str, seed: int = 0, **extra: Any) -> Dataset:
    """The dataset `text` names (see parse_data), made by its registered source with `seed`."""
    from verikit.plugins import registry

    name, options = parse_data(text)
    table = registry().entries["dataset"]
    if name not in table:
        raise DataError(f"no dataset named {name!r}", place="--data",
                        fix=f"choose one of: {', '.join(sorted(table))}, or a path to a .npz file")
    try:
        return table[name].provider.make(seed=seed, **options, **extra)
    except TypeError as error:
        raise DataError(f"dataset {name!r} does not take these options ({error})", place="--data",
                        fix="see `verikit plugins` and README's Training section") from error
