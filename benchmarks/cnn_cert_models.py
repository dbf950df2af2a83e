"""The inputs of the CNN-Cert experiments (`cnn_cert_experiment.yaml`, `cnn_cert_lp_experiment.yaml`):
small RANDOM pure CNNs of CNN-Cert's zoo (`cnn_cert_tables.build`: 3x3 VALID convs, ReLU, Dense(10),
He-normal weights) and images uniform in [-0.5, 0.5], written to results/cnn_cert_inputs/.

    python benchmarks/cnn_cert_models.py            # the files are committed; this re-makes them exactly

Sizes grow along the two axes the paper's speed-up grows with: filters (4L-5F, 4L-10F on 12x12) and
input size (4L-5F on 12x12, 20x20); 5L-5F adds depth.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnn_cert_tables import Model, build

FOLDER = Path(__file__).parent / "results" / "cnn_cert_inputs"
MODELS = (Model("4L-5F 12x12", 4, 5, (1, 1, 12, 12), 3), Model("5L-5F 12x12", 5, 5, (1, 1, 12, 12), 3),
          Model("4L-10F 12x12", 4, 10, (1, 1, 12, 12), 3), Model("4L-5F 20x20", 4, 5, (1, 1, 20, 20), 3))
SEED = 1215


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for model in MODELS:
        print(build(model, FOLDER))
    rng = np.random.default_rng(SEED)
    for side in sorted({model.shape[2] for model in MODELS}):
        name = "images.npy" if side == 12 else f"images_{side}x{side}.npy"
        np.save(FOLDER / name, rng.uniform(-0.5, 0.5, (3, 1, side, side)).astype(np.float32))
        print(FOLDER / name)


if __name__ == "__main__":
    main()
