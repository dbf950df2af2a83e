#!/usr/bin/env bash
# VNN-COMP tool interface: check that the model loads (and matches onnxruntime) and the spec parses.
set -uo pipefail
[ "${1:-}" = "v1" ] || { echo "usage: prepare_instance.sh v1 CATEGORY ONNX VNNLIB" >&2; exit 1; }
"${PYTHON:-python3}" - "$3" "$4" <<'PY'
import sys
import verikit
model = verikit.load_model(sys.argv[1])
verikit.load_spec(sys.argv[2], model)
PY
