#!/usr/bin/env bash
# VNN-COMP tool interface: verify one instance and write the result file.
set -uo pipefail
[ "${1:-}" = "v1" ] || { echo "usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT" >&2; exit 1; }
onnx=$3 vnnlib=$4 results=$5 timeout=$6
# keep a little of the budget for process start and writing the file
budget=$(python3 -c "print(max(1.0, float('$timeout') - 1.0))")
verikit verify "$onnx" "$vnnlib" --timeout "$budget" --results "$results" --quiet
status=$?
[ -s "$results" ] || echo "error" > "$results"
exit $status
