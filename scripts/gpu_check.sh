#!/usr/bin/env bash
# GPU check: on a CUDA machine, in under 8 minutes, run what cannot run without one and write
# bench/results/gpu.json (see bench/gpu_check.py for the steps):
#   build, native-vs-reference (and spconv) parity on CUDA, MinkUNet34 training step at
#   30k/100k/300k voxels per backend, Labeler and exported module on a 124k-point scan,
#   50 AMP training steps.
# Without CUDA it prints one line and exits 2; --cpu-smoke runs every step at toy sizes on
# the CPU instead. Other arguments go to bench/gpu_check.py (--out PATH, --budget-s S).
#
#   scripts/gpu_check.sh                     # on the GPU machine, from the repository root
#   PYTHON=/path/to/python scripts/gpu_check.sh --out /tmp/gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then
    PYTHON="$(command -v python3)"
fi
# Hard stop at 8 minutes whatever happens (the script's own budget ends its steps earlier).
exec timeout --signal=INT --kill-after=20 480 "$PYTHON" bench/gpu_check.py "$@"
