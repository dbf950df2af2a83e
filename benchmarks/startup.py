"""Start-up: process start to verdict of `verikit verify` on an easy ACAS Xu instance, against a bare
`python -c 'import torch'` measured in the same run (median of N runs each, interleaved).

    python benchmarks/startup.py [N]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ACAS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "acasxu"
COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    # The same with garbage collection off during the import and the heap frozen after it, as the CLI does.
    "import torch, collections off": [sys.executable, "-c", "import gc; gc.disable(); import torch; gc.freeze()"],
    "verikit verify (sat by attack)": [sys.executable, "-m", "verikit.cli", "verify", "-q",
                                       str(ACAS / "ACASXU_run2a_2_1_batch_2000.onnx"), str(ACAS / "prop_2.vnnlib")],
    "verikit verify (unsat by crown+bab)": [sys.executable, "-m", "verikit.cli", "verify", "-q",
                                            str(ACAS / "ACASXU_run2a_1_1_batch_2000.onnx"), str(ACAS / "prop_1.vnnlib")],
}


def main(repeats: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            times[name].append(time.perf_counter() - start)
            if result.returncode != 0:
                raise SystemExit(f"{name} failed: {result.stderr}")
    base = statistics.median(times["python -c 'import torch'"])
    print("| command | median s | minus import torch |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median - base:+.2f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
