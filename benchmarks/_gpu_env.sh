# Sourced by the GPU scripts (benchmarks/gpu_*.sh) on a GPU machine without network (../shared/notes/gpu_device.md):
# installs the wheels the GPU image lacks from .whl/ into /tmp/site when they are there, puts the checkout on the path,
# and prints the GPU and the versions.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
