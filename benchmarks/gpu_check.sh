#!/usr/bin/env bash
# One prepared run on a lent GPU machine (PyTorch preinstalled there, no network):
# the CUDA tests of LoRaD, then the layer benchmark in bf16 at SD1.5's batch-16 token counts.
# PEFT is carried as a wheel in .device/wheels (pip download --no-deps -d .device/wheels peft==0.21.2).
set -euo pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
if compgen -G ".device/wheels/*.whl" > /dev/null; then
  python3 -m pip install --quiet --no-deps --target /tmp/pylib .device/wheels/*.whl
fi
export PYTHONPATH=/tmp/pylib:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, peft; print('torch', torch.__version__, 'peft', peft.__version__)" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/lorad/test_cuda.py 2>&1 | tee "$out/test_cuda.txt" || true
python3 benchmarks/lorad_layer.py --device cuda --dtype bfloat16 --batch 16 --repeats 50 | tee "$out/lorad_layer_bf16.md"
python3 benchmarks/lorad_layer.py --device cuda --dtype bfloat16 --batch 16 --repeats 50 --block-elems 1000000000 | tee "$out/lorad_layer_bf16_one_block.md"
python3 benchmarks/lorad_layer.py --device cuda --dtype float32 --batch 16 --repeats 20 | tee "$out/lorad_layer_fp32.md"
