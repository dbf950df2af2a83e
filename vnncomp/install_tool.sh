#!/usr/bin/env bash
# VNN-COMP tool interface: install verikit (CPU torch first) and its dependencies.
set -euo pipefail
[ "${1:-}" = "v1" ] || { echo "usage: install_tool.sh v1" >&2; exit 1; }
cd "$(dirname "$0")/.."
python3 -m pip install --quiet torch==2.13.0
python3 -m pip install --quiet -e .
verikit --version
