#!/usr/bin/env bash
# Every GPU figure of poptrain's benchmarks, on a machine with a CUDA GPU, in under 5 minutes on
# an H100/H200-class GPU:
#   1. the vectorized executor's scaling on the GPU: digits MLP, populations 64 to 16,384,
#      member-epochs/s and peak GPU memory (torch.cuda.max_memory_allocated);
#   2. the full APBT Identity experiment (600 members x 8,000 epochs) trained on the GPU (one
#      timed run and one instrumented run, so that it fits its time limit).
# Results go to benchmarks/results/gpu/ (JSON and the printed log). Run from anywhere:
#   bash benchmarks/gpu.sh            # PYTHON=... to choose the interpreter (default: .venv/bin/python)
# Without a CUDA GPU it says so in one line and exits with status 2. Each step runs under a time
# limit (170 s + 100 s, with start-up well under 5 minutes in all).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
out=benchmarks/results/gpu

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine with one" >&2
    exit 2
fi
mkdir -p "$out"
"$python" -c 'import torch; print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__)' | tee "$out/log.txt"

echo "== vectorized executor on the GPU: populations 64 to 16,384 ==" | tee -a "$out/log.txt"
timeout 170 "$python" -m benchmarks.vectorized --device cuda --threads 4 --out "$out/vectorized.json" \
    | grep -v '^{' | tee -a "$out/log.txt"

echo "== APBT Identity, full experiment, on the GPU ==" | tee -a "$out/log.txt"
timeout 100 "$python" -m benchmarks.apbt --device cuda --threads 4 --repeats 1 --out "$out/apbt.json" \
    | grep -v '^{' | tee -a "$out/log.txt"

echo "results in $out/ (vectorized.json, apbt.json, log.txt)"
