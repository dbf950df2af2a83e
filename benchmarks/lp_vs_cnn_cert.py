"""CNN-Cert's LP comparison (Table 3, "MNIST 4L-5F, l_inf"): seconds per input of the triangle LP
(`dual-lp`: HiGHS dual simplex, Fast-Lin intermediate bounds) against `crown` and `cnn-cert`.

    python benchmarks/lp_vs_cnn_cert.py            # 4L-5F on 14x14 (3 inputs), 20x20 (2), 28x28 (2): ~25 min
    python benchmarks/lp_vs_cnn_cert.py --quick    # the 14x14 variant only, 1 input: ~1 min
    python benchmarks/lp_vs_cnn_cert.py --sizes 14 20   # only these input sizes

Networks: 3 convolutions of 5 3x3 filters (VALID, stride 1, ReLU), then Flatten and Dense(10), RANDOM
weights (He-normal kernels, small random biases), inputs uniform in [-0.5, 0.5]. A binary search over
eps costs 15 LPs per input, too slow for the dual simplex here, so each method bounds the margin
y_label - y_target once at a fixed eps (label = predicted class, target = a random other class);
every method times one whole bound call (the LP's includes its Fast-Lin intermediate bounds),
single thread. The paper's figures are per whole search: LP 853 s vs CNN-Cert 2.3 s (366x).
`dual-lp ipm` (HiGHS's interior point + crossover on the same LP) is listed for reference.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from verikit.errors import PluginError
from verikit.methods.lp import LPOptions
from verikit.onnx_import import load_model
from verikit.plugins import get_method
from verikit.region import LpBall

EPS = 0.01
METHODS = (("crown", "crown", None), ("cnn-cert", "cnn-cert", None),
           ("dual-lp ipm", "dual-lp", LPOptions(sides="lower", solver="ipm")),
           ("dual-lp (dual simplex)", "dual-lp", LPOptions(sides="lower", solver="dual-simplex")))


def build(side: int, folder: Path, filters: int = 5, convs: int = 3, seed: int = 0) -> Path:
    """The 4L-5F network on side x side x 1 inputs with random weights, as an ONNX file."""
    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def constant(name: str, array: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    channels, size, current = 1, side, "x"
    for layer in range(convs):
        kernel = constant(f"k{layer}", rng.normal(0, np.sqrt(2 / (9 * channels)), (filters, channels, 3, 3)))
        bias = constant(f"b{layer}", rng.normal(0, 0.05, filters))
        nodes += [helper.make_node("Conv", [current, kernel, bias], [f"c{layer}"], kernel_shape=[3, 3]),
                  helper.make_node("Relu", [f"c{layer}"], [f"r{layer}"])]
        channels, size, current = filters, size - 2, f"r{layer}"
    width = channels * size * size
    dense = [constant("w", rng.normal(0, np.sqrt(1 / width), (10, width))), constant("b", rng.normal(0, 0.05, 10))]
    nodes += [helper.make_node("Flatten", [current], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", *dense], ["y"], transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, side, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    graph = helper.make_graph(nodes, f"4L-5F-{side}", [x], [y], initializer=weights)
    path = folder / f"mnist_4l5f_{side}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def cases(graph, count: int, seed: int = 1215) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(image [1, n], margin row [1, 1, 10]) pairs: label = predicted class, target = a random other class."""
    generator = torch.Generator().manual_seed(seed)
    result = []
    for _ in range(count):
        image = torch.rand(1, graph.input_size, generator=generator) - 0.5
        with torch.no_grad():
            label = int(graph.forward_flat(image)[0].argmax())
        target = (label + 1 + int(torch.randint(9, (1,), generator=generator))) % 10
        row = torch.zeros(1, 1, 10)
        row[0, 0, label], row[0, 0, target] = 1.0, -1.0
        result.append((image, row))
    return result


def time_method(graph, name: str, options, image: torch.Tensor, row: torch.Tensor) -> tuple[float, float]:
    """(seconds, lower bound of the margin) of one bound call on the l_inf ball of radius EPS."""
    region = LpBall(image, torch.tensor([EPS]), float("inf"))
    clock = time.perf_counter()
    lower = float(get_method(name).bound(graph, region, row, options).lower[0, 0])
    return time.perf_counter() - clock, lower


def unstable(graph, image: torch.Tensor, row: torch.Tensor) -> int:
    """Unstable ReLUs under Fast-Lin's intermediate bounds at EPS."""
    intermediate = {}
    get_method("fast-lin").bound(graph, LpBall(image, torch.tensor([EPS]), float("inf")), row, None, intermediate)
    return sum(int(((b.lower < 0) & (b.upper > 0)).sum()) for b in intermediate.values())


def registered() -> list[tuple[str, str, LPOptions | None]]:
    """The entries of METHODS whose method is registered (the others are skipped, with a note)."""
    available = []
    for label, name, options in METHODS:
        try:
            get_method(name)
            available.append((label, name, options))
        except PluginError:
            print(f"  ({name} is not registered: skipped)")
    return available


def warm_up(folder: Path) -> None:
    """One untimed call of every method on a tiny net: imports, solver and kernel set-up."""
    graph = load_model(build(10, folder), check=False)
    for _, name, options in registered():
        time_method(graph, name, options, *cases(graph, 1)[0])


def run(side: int, count: int, folder: Path) -> list[str]:
    """Markdown rows for one network: per method, mean seconds per input, mean bound, ratio to the LP."""
    graph = load_model(build(side, folder), check=False)
    problems = cases(graph, count)
    available = registered()
    seconds = {label: [] for label, _, _ in available}
    bounds = {label: [] for label, _, _ in available}
    for image, row in problems:
        for label, name, options in available:
            spent, lower = time_method(graph, name, options, image, row)
            seconds[label].append(spent)
            bounds[label].append(lower)
            print(f"  {side}x{side} {label}: {spent:.2f} s, margin lower bound {lower:.5f}", flush=True)
    lp = float(np.mean(seconds[METHODS[-1][0]]))
    hidden = sum(5 * (side - 2 * k) ** 2 for k in (1, 2, 3))
    rows = []
    for label, _, _ in available:
        mean = float(np.mean(seconds[label]))
        rows.append(f"| 4L-5F {side}x{side} ({hidden} ReLU, ~{unstable(graph, *problems[0])} unstable) | {label} | "
                    f"{count} | {np.mean(bounds[label]):.5f} | {mean:.2f} | x{lp / mean:.1f} |")
    return rows


def machine() -> str:
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    return (f"{os.cpu_count()} cores ({cpu.split(':', 1)[-1].strip() or platform.processor()}), torch "
            f"{torch.__version__}, 1 thread, {time.strftime('%Y-%m-%d')}")


def main(quick: bool, sizes: list[int] | None) -> None:
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    print(f"machine: {machine()}; eps = {EPS} (l_inf)\n")
    warm_up(folder)
    plan = [(14, 1)] if quick else [(14, 3), (20, 2), (28, 2)]
    plan = [(side, count) for side, count in plan if sizes is None or side in sizes]
    table = ["| network | method | inputs | mean margin bound | s / input | LP (dual simplex) s / this |",
             "|---|---|---:|---:|---:|---:|"]
    for side, count in plan:
        table += run(side, count, folder)
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 14x14 variant only, one input")
    parser.add_argument("--sizes", type=int, nargs="+", help="input sizes to run (14, 20, 28)")
    arguments = parser.parse_args()
    main(arguments.quick, arguments.sizes)
