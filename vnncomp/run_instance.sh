#!/usr/bin/env bash
# VNN-COMP tool interface: verify one instance and write the result file.
# verikit stops itself at the deadline, inside bound passes too (between layers); `timeout` is the hard
# guard for anything that would still overrun it, and then the result is `timeout`.
set -uo pipefail
[ "${1:-}" = "v1" ] || { echo "usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT" >&2; exit 1; }
onnx=$3 vnnlib=$4 results=$5 limit=$6
rm -f "$results"
mkdir -p "$(dirname "$results")"  # verify refuses a results file in a missing folder
# verify's branch and bound takes one worker a core by default: an instance here has the machine.
# keep a little of the budget for process start and writing the file
budget=$(python3 -c "print(max(1.0, float('$limit') - 1.0))")
timeout -k 2 "$limit" "${PYTHON:-python3}" -m verikit.cli verify "$onnx" "$vnnlib" --timeout "$budget" --results "$results" --quiet
status=$?
if [ ! -s "$results" ]; then
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then echo "timeout" > "$results"; else echo "error" > "$results"; fi
fi
exit 0
