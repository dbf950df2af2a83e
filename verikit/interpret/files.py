"""The files `verikit explain` writes for one input: image.png, then for each class asked for the raw map
(METHOD_classL.npy) and its pictures (METHOD_classL.png, METHOD_classL_overlay.png)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from verikit.errors import VerikitError
from verikit.interpret.maps import explain
from verikit.interpret.network import SplitNetwork
from verikit.interpret.pictures import enlarge, image_rgb, write_pictures, write_png


@dataclass
class Explained:
    """One class's map: its logit, the map's shape and the files holding it."""

    label: int
    logit: float
    shape: tuple[int, ...]
    array: Path
    picture: Path
    overlay: Path


def file_stem(method: str, label: int) -> str:
    return f"{method.replace('+', 'p')}_class{label}"


def planned_files(folder: Path, method: str, labels: list[int]) -> list[Path]:
    """The map files an explanation of `labels` writes in `folder` (image.png, the input, is rewritten:
    several methods and classes of one input share a folder)."""
    stems = [file_stem(method, label) for label in labels]
    return [folder / f"{s}{suffix}" for s in stems for suffix in (".npy", ".png", "_overlay.png")]


def write_explanation(network: SplitNetwork, x: torch.Tensor, labels: list[int] | None, method: str,
                      folder: str | Path, steps: int = 64, force: bool = False) -> list[Explained]:
    """Maps of input x [C, H, W] for each label (default: the predicted class) written to `folder`
    (created if missing); existing files are replaced only with `force`."""
    folder = Path(folder)
    x = x.reshape(1, *network.input_shape).float()
    with torch.no_grad():
        logits = network.logits(x)[0]
    labels = [int(logits.argmax())] if not labels else list(labels)
    bad = [label for label in labels if not 0 <= label < len(logits)]
    if bad:
        raise VerikitError(f"--label {bad[0]} is not a class of a model with {len(logits)} outputs",
                           place="--label", fix=f"use 0..{len(logits) - 1}")
    if folder.exists() and not folder.is_dir():
        raise VerikitError("is not a folder", path=str(folder), fix="give a folder for --out")
    existing = [path for path in planned_files(folder, method, labels) if path.exists()]
    if existing and not force:
        raise VerikitError("the output files exist", path=str(existing[0]), fix="pass --force to replace them, or "
                                                                               "choose another --out")
    maps = explain(network, x.expand(len(labels), *x.shape[1:]), torch.tensor(labels), method, steps)
    folder.mkdir(parents=True, exist_ok=True)
    image = x[0].numpy()
    write_png(folder / "image.png", enlarge(image_rgb(image)))
    results = []
    for label, values in zip(labels, maps.detach().numpy().astype(np.float64)):
        stem = file_stem(method, label)
        np.save(folder / f"{stem}.npy", values)
        picture, overlay = write_pictures(folder, stem, image, values)
        results.append(Explained(label, float(logits[label]), tuple(values.shape), folder / f"{stem}.npy", picture,
                                 overlay))
    return results
