#!/usr/bin/env bash
# Issue 36's ReID speed as a tracker meets it, on a GPU machine without network (../shared/notes/gpu_device.md): the
# same rows as the CPU run (benchmarks/bench_tracker_reid.py: tiny, DeiT-S, the paper's ViT-B s11, BoxMOT's default
# osnet_x0_25 beside them), torch on CUDA and ONNX Runtime on its CUDA provider where the image's onnxruntime has one.
# About 2 minutes. Usage: bash benchmarks/gpu_trackers.sh OUT_DIR  (needs .whl/ as gpu_efficiency.sh does)
set -euo pipefail
out=${1:?OUT_DIR}; shift
mkdir -p "$out"
source benchmarks/_gpu_env.sh
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
python3 benchmarks/bench_tracker_reid.py --device cuda --batches 1 8 32 --iters 20 --warmup 5 \
  --out "$out/bench_tracker_reid_gpu.json" "$@" 2>&1 | tee "$out/bench_tracker_reid_gpu.log"
