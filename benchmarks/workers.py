"""`bab --workers N`: one instance decided by branch and bound alone with 1, 2, ... worker processes,
each count timed in the same run (ratios against one process).

    python benchmarks/workers.py [MODEL SPEC] [--workers 1 2] [--deadline 150]

Default instance: mnistfc 256x2 prop_1_0.03 (ReLU splitting, the slowest of the peers' mnistfc half).
ACAS Xu 3_3 prop_2 (`--acas`) measures input splitting instead.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
MNIST = (SHARED / "mnistfc" / "mnist-net_256x2.onnx", SHARED / "mnistfc" / "prop_1_0.03.vnnlib")
ACAS = (SHARED / "acasxu" / "ACASXU_run2a_3_3_batch_2000.onnx", SHARED / "acasxu" / "prop_2.vnnlib")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instance", nargs="*", help="MODEL SPEC (default: mnistfc prop_1_0.03)")
    parser.add_argument("--acas", action="store_true", help="ACAS Xu 3_3 prop_2 instead")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--deadline", type=float, default=150.0, help="seconds per run")
    args = parser.parse_args()
    import torch

    from verikit.api import load_model, load_spec
    from verikit.methods.bab import BaBOptions, BranchAndBound

    torch.set_num_threads(1)
    model, spec = args.instance if len(args.instance) == 2 else (ACAS if args.acas else MNIST)
    graph = load_model(model)
    prop = load_spec(spec, graph)
    print(f"{Path(model).name} {Path(spec).name}, bab alone, deadline {args.deadline:.0f} s\n")
    print("| processes | verdict | seconds | vs 1 process | detail |")
    print("|---:|---|---:|---:|---|")
    first = None
    for workers in args.workers:
        start = time.monotonic()
        verdict = BranchAndBound().decide(graph, prop, BaBOptions(workers=workers), start + args.deadline)
        seconds = time.monotonic() - start
        first = first or seconds
        print(f"| {workers} | {verdict.status} | {seconds:.1f} | x{first / seconds:.2f} | {verdict.detail[:80]} |",
              flush=True)


if __name__ == "__main__":
    main()
