"""CNN-Cert's speed-up: patch coefficients (`cnn-cert`) vs dense back-substitution (`fast-lin`, `crown`)
on pure CNNs shaped like CNN-Cert's model zoo (seed-papers 2.1), single thread, as in the paper's Table 3/4.

    python benchmarks/cnn_cert_tables.py            # about 15 minutes on a 2-core box; prints markdown
    python benchmarks/cnn_cert_tables.py --quick    # a one-input smoke run

Networks: N-1 convs (3x3, VALID, stride 1, ReLU) then Flatten and Dense(10) on 28x28x1 (MNIST) or 32x32x3
(CIFAR) inputs, with RANDOM weights (He-normal kernels, small random biases; no training), so the radii
are not comparable with the paper's numbers, only between methods.
Inputs: uniform random images in [-0.5, 0.5]; label = predicted class; one random target per input that
is neither the top, the runner-up nor the least likely class (CNN-Cert's protocol), seed 1215.
Radius: verikit.radius.certified_radius: log-space search from 0.05, 15 steps, float32, no IBP intersection.
Dense baselines: one dense bound costs 4-70x a patch bound, so a full dense search per input would take
hours; instead each dense method is timed on one bound (input 0, l_inf, at its CNN-Cert radius) next to the
same patch bound, whose result it must equal, and its seconds per input are that time x 15 (a search is
exactly 15 bounds). Identical bounds give identical search decisions, hence identical radii; on 4L-5F one
full dense Fast-Lin search (input 0, l_inf) checks that end to end.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from verikit.methods.cnn_cert import CnnCertOptions
from verikit.methods.linear_relaxation import LinearRelaxationOptions
from verikit.onnx_import import load_model
from verikit.plugins import get_method
from verikit.radius import certified_radius, margin_rows
from verikit.region import LpBall

NORMS = ("inf", "2", "1")
STEPS = 15


@dataclass(frozen=True)
class Model:
    """A pure CNN of the zoo: `layers` - 1 convs of `filters` filters, then Dense(10); `inputs` images."""

    name: str
    layers: int
    filters: int
    shape: tuple[int, ...]
    inputs: int


MODELS = (
    Model("MNIST 4L-5F", 4, 5, (1, 1, 28, 28), 10),
    Model("MNIST 4L-20F", 4, 20, (1, 1, 28, 28), 2),
    Model("MNIST 5L-5F", 5, 5, (1, 1, 28, 28), 5),
    Model("MNIST 8L-5F", 8, 5, (1, 1, 28, 28), 3),
    Model("CIFAR 5L-10F", 5, 10, (1, 3, 32, 32), 2),
    Model("CIFAR 7L-5F", 7, 5, (1, 3, 32, 32), 2),
)


def build(model: Model, folder: Path, seed: int = 0) -> Path:
    """The model as an ONNX file with random weights."""
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    channels, side, current = model.shape[1], model.shape[2], "x"

    def constant(name: str, array: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    for index in range(model.layers - 1):
        kernel = rng.normal(0, np.sqrt(2 / (9 * channels)), (model.filters, channels, 3, 3))
        inputs = [current, constant(f"w{index}", kernel), constant(f"b{index}", rng.normal(0, 0.05, model.filters))]
        nodes += [helper.make_node("Conv", inputs, [f"conv{index}"], kernel_shape=[3, 3]),
                  helper.make_node("Relu", [f"conv{index}"], [f"relu{index}"])]
        channels, side, current = model.filters, side - 2, f"relu{index}"
    width = channels * side * side
    nodes += [helper.make_node("Flatten", [current], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", constant("wd", rng.normal(0, np.sqrt(1 / width), (10, width))),
                                        constant("bd", rng.normal(0, 0.05, 10))], ["y"], transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(model.shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    graph = helper.make_graph(nodes, model.name, [x], [y], initializer=weights)
    path = folder / f"{model.name.replace(' ', '_')}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def hidden_neurons(model: Model) -> int:
    side = model.shape[2]
    return sum(model.filters * (side - 2 * k) ** 2 for k in range(1, model.layers))


def problems(graph, count: int, seed: int = 1215) -> list[tuple[torch.Tensor, int, int]]:
    """(image, label, target) triples by CNN-Cert's random-target protocol."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, graph.input_size, generator=generator, dtype=torch.float64) - 0.5
    with torch.no_grad():
        scores = graph.to(torch.float64).forward_flat(images)
    result = []
    for image, score in zip(images, scores):
        order = score.argsort(descending=True).tolist()
        choices = order[2:-1]  # not the top, the runner-up or the least likely class
        target = choices[int(torch.randint(len(choices), (1,), generator=generator))]
        result.append((image, order[0], target))
    return result


def patch_searches(graph, cases, mode: str, norm: str) -> tuple[float, float, list[float]]:
    """Mean radius and mean seconds per input of the cnn-cert search, and the radii."""
    options = CnnCertOptions(mode=mode, intersect_ibp=False)
    radii, seconds = [], []
    for image, label, target in cases:
        result = certified_radius(graph, image, label, target, norm, "cnn-cert", options, steps=STEPS, attack=False)
        radii.append(result.certified)
        seconds.append(result.seconds)
    return float(np.mean(radii)), float(np.mean(seconds)), radii


def timed_bound(graph, method: str, options, image, label, target, eps: float) -> tuple[float, float]:
    """(seconds, lower bound of y_label - y_target) of one bound on the l_inf ball of radius eps."""
    region = LpBall(image.unsqueeze(0).float(), torch.tensor([eps]), float("inf"))
    rows = margin_rows(label, (target,), graph.output_size).float()
    clock = time.perf_counter()
    lower = float(get_method(method).bound(graph, region, rows, options).lower[0, 0])
    return time.perf_counter() - clock, lower


def dense_comparison(graph, case, eps: float) -> dict[str, tuple[float, float, float]]:
    """Per mode: (dense seconds, patch seconds, |difference of the bounds| / |clean margin|) of one bound."""
    image, label, target = case
    with torch.no_grad():
        scores = graph.forward_flat(image.unsqueeze(0).float())[0]
    scale = abs(float(scores[label] - scores[target]))
    result = {}
    for mode, dense_name in (("relu", "fast-lin"), ("ada", "crown")):
        patch_options = CnnCertOptions(mode=mode, intersect_ibp=False)
        timed_bound(graph, "cnn-cert", patch_options, image, label, target, eps)  # warm-up (kernel set-up)
        patch_seconds, patch_lower = timed_bound(graph, "cnn-cert", patch_options, image, label, target, eps)
        dense_seconds, dense_lower = timed_bound(graph, dense_name, LinearRelaxationOptions(intersect_ibp=False),
                                                 image, label, target, eps)
        result[mode] = (dense_seconds, patch_seconds, abs(dense_lower - patch_lower) / scale)
    return result


def full_dense_check(graph, case) -> str:
    """One complete dense Fast-Lin search against the patch search (same input, l_inf)."""
    image, label, target = case
    dense = certified_radius(graph, image, label, target, "inf", "fast-lin", LinearRelaxationOptions(intersect_ibp=False),
                             steps=STEPS, attack=False)
    patch = certified_radius(graph, image, label, target, "inf", "cnn-cert",
                             CnnCertOptions(mode="relu", intersect_ibp=False), steps=STEPS, attack=False)
    return (f"full l_inf search on input 0: Fast-Lin (dense) radius {dense.certified:.6g} in {dense.seconds:.1f} s, "
            f"CNN-Cert-relu (patches) radius {patch.certified:.6g} in {patch.seconds:.2f} s "
            f"(x{dense.seconds / patch.seconds:.1f}); radii {'identical' if dense.certified == patch.certified else 'DIFFER'}")


def machine() -> str:
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    return (f"{os.cpu_count()} cores ({cpu.split(':', 1)[-1].strip() or platform.processor()}), "
            f"torch {torch.__version__}, 1 thread, {time.strftime('%Y-%m-%d')}")


def main(quick: bool) -> None:
    torch.set_num_threads(1)
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp())
    print(f"machine: {machine()}\n")
    print("| model (hidden) | norm | inputs | CNN-Cert-relu radius | s/input | Fast-Lin s/input (est.) | speed-up "
          "| CNN-Cert-Ada radius | s/input | CROWN s/input (est.) | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for model in MODELS[:1] if quick else MODELS:
        graph = load_model(build(model, folder), check=False)
        cases = problems(graph, 1 if quick else model.inputs)
        runs = {(mode, norm): patch_searches(graph, cases, mode, norm) for mode in ("relu", "ada") for norm in NORMS}
        eps = max(runs[("relu", "inf")][2][0], 1e-4)
        dense = dense_comparison(graph, cases[0], eps)
        for norm in NORMS:
            cells = [f"{model.name} ({hidden_neurons(model)})", norm, str(len(cases))]
            for mode in ("relu", "ada"):
                radius, seconds, _ = runs[(mode, norm)]
                estimate = dense[mode][0] * STEPS
                cells += [f"{radius:.5f}", f"{seconds:.2f}", f"{estimate:.1f}", f"x{estimate / seconds:.1f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
        notes.append(f"{model.name}: one l_inf bound at eps={eps:.3g}: Fast-Lin {dense['relu'][0]:.2f} s vs "
                     f"patches {dense['relu'][1]:.3f} s (x{dense['relu'][0] / dense['relu'][1]:.1f}, bounds differ "
                     f"by {dense['relu'][2]:.1e} of the clean margin); CROWN {dense['ada'][0]:.2f} s vs patches "
                     f"{dense['ada'][1]:.3f} s (x{dense['ada'][0] / dense['ada'][1]:.1f}, {dense['ada'][2]:.1e})")
        if model.name == "MNIST 4L-5F":
            notes.append(f"{model.name}: {full_dense_check(graph, cases[0])}")
    print()
    for note in notes:
        print(f"- {note}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one model, one input: a smoke run")
    main(parser.parse_args().quick)
    sys.exit(0)
