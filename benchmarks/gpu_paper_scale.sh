#!/usr/bin/env bash
# Paper-scale GPU measurements (docs/PERFORMANCE.md). Usage:
#   bash benchmarks/gpu_paper_scale.sh OUT_DIR doctor     # lfem-reid doctor on the paper config: bf16, +compile, fp32
#   bash benchmarks/gpu_paper_scale.sh OUT_DIR rest       # bench_throughput (GPU mode), ORL quick profile, torchrun
# Synthetic Occluded-Duke-shaped data and random init (no data or ImageNet weights needed); each step's log and JSON
# land in OUT_DIR.
set -uo pipefail
out=${1:?OUT_DIR}; stage=${2:?doctor or rest}
mkdir -p "$out"
lfem="python3 -m lfem_plugin"
cfg=configs/occluded_duke/lfem_vit_base_s11_256x128.yaml
doctor="$lfem doctor --config-file $cfg --synthetic --iters 20 --warmup 5 --eval-images 2048"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
if [ "$stage" = doctor ]; then
  $doctor --out "$out/doctor_bf16_w4.json" model.pretrained False
  $doctor --out "$out/doctor_bf16_w8.json" model.pretrained False data.workers 8
  $doctor --out "$out/doctor_bf16_compile_w8.json" model.pretrained False data.workers 8 lfem.compile True
  $doctor --out "$out/doctor_fp32_tf32_w8.json" model.pretrained False data.workers 8 lfem.amp off
else
  python3 benchmarks/bench_throughput.py --device cuda --out "$out"
  $lfem compare --profile quick --seeds 0 --out "$out/quick" --root /tmp/reid-data && $lfem compare --report --out "$out/quick"
  torchrun --standalone --nproc_per_node 1 -m lfem_plugin train --config-file configs/orl/lfem_vit_tiny_64x32_cpu.yaml \
    data.root /tmp/reid-data data.save_dir /tmp/torchrun_orl train.max_epoch 20
fi
