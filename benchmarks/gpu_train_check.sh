#!/usr/bin/env bash
# One prepared run on a lent GPU machine (PyTorch, transformers, accelerate preinstalled there; no
# network): the DKD train-step benchmark on the SD1.5-shaped U-Net. Carried in .device/: wheels of
# peft and diffusers (pip download --no-deps -d .device/wheels peft==0.21.2 diffusers==0.42.1) and a
# CLIP tokenizer folder (python -c "from dkd.backbones.tiny import write_clip_tokenizer as w; w('.device/clip_tokenizer')").
set -euo pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
python3 -m pip install --quiet --no-deps --target /tmp/pylib .device/wheels/*.whl
export PYTHONPATH=/tmp/pylib:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 benchmarks/train_step.py --tokenizer .device/clip_tokenizer --methods lorad ft lora dora "$@" \
  2>&1 | grep -v "should be kept in float32" | tee "$out/train_step.md"
