#!/usr/bin/env bash
# One prepared run on a lent GPU machine (PyTorch, transformers, accelerate preinstalled there; no
# network): the DKD train step of every method without speed options (with a torch.profiler table per
# method), with channels_last, and DKD with channels_last and compiled repeated blocks.
# Carried in .device/: wheels of peft and diffusers (pip download --no-deps -d .device/wheels peft==0.21.2
# diffusers==0.42.1) and a CLIP tokenizer folder
# (python -c "from dkd.backbones.tiny import write_clip_tokenizer as w; w('.device/clip_tokenizer')").
set -uo pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
python3 -m pip install --quiet --no-deps --target /tmp/pylib .device/wheels/*.whl
export PYTHONPATH=/tmp/pylib:$PWD PYTHONUNBUFFERED=1
bench() { python3 benchmarks/train_step.py --tokenizer .device/clip_tokenizer --objectives dkd "$@" 2>&1 | grep -v "kept in float32"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/base.md"
bench --methods lorad lora dora ft --profile "$out" | tee -a "$out/base.md"
bench --methods lorad lora dora ft --channels-last | tee "$out/channels_last.md"
timeout 240 python3 benchmarks/train_step.py --tokenizer .device/clip_tokenizer --objectives dkd --methods lorad --channels-last \
  --compile-blocks > "$out/compile.md" 2>&1; echo "exit $?" >> "$out/compile.md"; tail -4 "$out/compile.md"
