#!/usr/bin/env bash
# One prepared run on a lent GPU machine (PyTorch, transformers, accelerate preinstalled there; no
# network), about 9 minutes, most informative first; every part has its own time limit:
#   1. the DKD train step with the U-Net's ResNet blocks compiled too, with cudnn.benchmark
#      (and then with static shapes), against the measured 27.2 samples/s of channels_last +
#      compiled transformer blocks;
#   2. the CUDA tests of the trainer (bf16 resume, inductor-compiled blocks against a float32
#      reference, the embedding cache's batch invariance; printed figures) and of LoRaD;
#   3. the baseline (channels_last + compiled transformer blocks) on this machine, to compare.
# Carried in .device/ (run with carry [".device"]): wheels of peft and diffusers
# (pip download --no-deps -d .device/wheels peft==0.21.2 diffusers==0.42.1), a CLIP tokenizer folder
# (python -c "from dkd.backbones.tiny import write_clip_tokenizer as w; w('.device/clip_tokenizer')")
# and a tiny SD folder for the tests
# (python -c "from dkd.backbones.tiny import save_tiny_backbone as s; s('sd', '.device/tiny-sd', seed=1)").
set -uo pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
python3 -m pip install --quiet --no-deps --target /tmp/pylib .device/wheels/*.whl
export PYTHONPATH=/tmp/pylib:$PWD PYTHONUNBUFFERED=1 DKD_TINY_SD=$PWD/.device/tiny-sd
step() {  # step SECONDS FILE ARGS...: one benchmark run with a time limit, its table kept in FILE
  local limit=$1 file=$2; shift 2
  timeout "$limit" python3 benchmarks/train_step.py --tokenizer .device/clip_tokenizer --objectives dkd --methods lorad \
    --channels-last "$@" > "$out/$file" 2>&1
  echo "exit $?" >> "$out/$file"; grep -E "^DKD|^\| lorad|^exit" "$out/$file"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
step 200 resnet_cudnn.md --compile-blocks BasicTransformerBlock ResnetBlock2D --cudnn-benchmark
step 200 resnet_cudnn_static.md --compile-blocks BasicTransformerBlock ResnetBlock2D --cudnn-benchmark --compile-static
timeout 150 python3 -m pytest -q -s -p no:cacheprovider tests/train/test_cuda_train.py tests/lorad/test_cuda.py \
  > "$out/test_cuda.txt" 2>&1; echo "exit $?" >> "$out/test_cuda.txt"; grep -E "bit-identical|passed|failed|^exit" "$out/test_cuda.txt"
step 160 baseline.md --compile-blocks
