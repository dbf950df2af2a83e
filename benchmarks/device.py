"""`--device cuda` against the CPU, side by side on one machine: input-splitting branch and bound on
ACAS Xu, one CROWN bound on the CIFAR ResNet and oval21 nets, and the whole `verify` pipeline.

    python benchmarks/device.py [--data ../shared/benchmarks] [--quick]

Every GPU verdict must equal the CPU's, and every GPU bound the CPU's up to float32 rounding. Prints
markdown tables (CPU: one torch thread, verikit's default).
"""
from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path

import torch

import verikit
from verikit.methods.bab import BaBOptions, BranchAndBound, InputSplitOptions
from verikit.plugins import get_method
from verikit.pipeline import VerifyOptions, verify

ACAS = [("3_3", "prop_2"), ("1_1", "prop_2"), ("2_1", "prop_3"), ("1_1", "prop_6"), ("3_3", "prop_9")]
CONV = [("cifar10_resnet/onnx/resnet_2b.onnx",
         "cifar10_resnet/vnnlib_properties_pgd_filtered/resnet2b_pgd_filtered/prop_0_eps_0.008.vnnlib"),
        ("oval21/nets/cifar_base_kw.onnx", "oval21/vnnlib/cifar_base_kw-img4549-eps0.00392156862745098.vnnlib")]


def timed(work):
    """(result, seconds) of work(), synchronising the GPU around it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = work()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def acas_table(data: Path, cap: float, instances) -> None:
    print("\n| ACAS Xu | cpu verdict | cpu s (batch 1024) | cuda verdict | cuda s (batch 16384) | cpu / cuda |")
    print("|---|---|---:|---|---:|---:|")
    for net, prop in instances:
        graph = verikit.load_model(data / "acasxu" / f"ACASXU_run2a_{net}_batch_2000.onnx")
        spec = verikit.load_spec(data / "acasxu" / f"{prop}.vnnlib", graph)
        runs = {}
        for device, batch in (("cpu", 1024), ("cuda", 16384)):
            options = BaBOptions(device=device, inputs=InputSplitOptions(batch=batch))
            runs[device] = timed(lambda: BranchAndBound().decide(graph, spec, options, time.monotonic() + cap))
        (cpu, cpu_s), (gpu, gpu_s) = runs["cpu"], runs["cuda"]
        print(f"| {net} {prop} | {cpu.status} | {cpu_s:.2f} | {gpu.status} | {gpu_s:.2f} | x{cpu_s / gpu_s:.1f} |",
              flush=True)


def conv_table(data: Path) -> None:
    print("\n| network | method | cpu s | cuda s | cpu / cuda | max bound difference |")
    print("|---|---|---:|---:|---:|---:|")
    for onnx, vnnlib in CONV:
        graph = verikit.load_model(data / onnx)
        spec = verikit.load_spec(data / vnnlib, graph).regions[0]
        rows = torch.cat([c.coefficients for c in spec.clauses]).float().unsqueeze(0)
        for name in ("crown", "alpha-crown"):
            method = get_method(name)
            results = {}
            for device in ("cpu", "cuda"):
                region = spec.region.to(torch.float32, device)
                method.bound(graph, region, rows.to(device))  # warm-up (CUDA kernels, caches)
                results[device] = timed(lambda: method.bound(graph, region, rows.to(device)).lower.cpu())
            (cpu, cpu_s), (gpu, gpu_s) = results["cpu"], results["cuda"]
            difference = float((cpu - gpu).abs().max())
            print(f"| {Path(onnx).stem} | {name} | {cpu_s:.2f} | {gpu_s:.2f} | x{cpu_s / gpu_s:.1f} | {difference:.2e} |",
                  flush=True)


def verify_table(data: Path, cap: float) -> None:
    print("\n| instance | cpu verdict | cpu s | cuda verdict | cuda s |")
    print("|---|---|---:|---|---:|")
    pairs = [(f"acasxu/ACASXU_run2a_{n}_batch_2000.onnx", f"acasxu/{p}.vnnlib") for n, p in ACAS[:3]]
    pairs += [("mnistfc/mnist-net_256x2.onnx", "mnistfc/prop_0_0.03.vnnlib")] + CONV[1:]
    for onnx, vnnlib in pairs:
        graph = verikit.load_model(data / onnx)
        prop = verikit.load_spec(data / vnnlib, graph)
        cpu = verify(graph, prop, VerifyOptions(timeout=cap))
        gpu = verify(graph, prop, VerifyOptions(timeout=cap, device="cuda"))
        print(f"| {Path(vnnlib).stem} on {Path(onnx).stem} | {cpu.status} | {cpu.seconds:.2f} | {gpu.status} | "
              f"{gpu.seconds:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "benchmarks")
    parser.add_argument("--cap", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="two ACAS Xu instances, no verify table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}, torch {torch.__version__}")
    sections = [lambda: acas_table(args.data, args.cap, ACAS[:2] if args.quick else ACAS),
                lambda: conv_table(args.data)]
    if not args.quick:
        sections.append(lambda: verify_table(args.data, args.cap))
    for section in sections:
        try:
            section()
        except Exception:  # report and go on: one failing section should not hide the others
            traceback.print_exc()


if __name__ == "__main__":
    main()
