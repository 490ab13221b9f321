"""Forward+backward time and peak memory of LoRaD vs PEFT LoRA and DoRA on SD1.5 layer shapes.

Prints one markdown table with ratios to LoRA (same rank). Methods:
  lorad        LoRaD with the memory-efficient custom backward (the default)
  lorad-plain  LoRaD under plain autograd (what the paper's appendix A measures)
  lora, dora   PEFT's LoRA and DoRA

On CPU each measurement runs in its own process and the peak is the process's peak RSS above
the RSS after set-up; on CUDA it is torch.cuda.max_memory_allocated above the set-up level.
"extra/W" is (peak - LoRA's peak) in units of the layer's weight size.

  python benchmarks/lorad_layer.py                     # CPU, 2048 tokens, float32
  python benchmarks/lorad_layer.py --device cuda --dtype bfloat16 --batch 16   # SD1.5 token counts
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections import OrderedDict

import torch
from torch import nn

# (name, in, out, latent tokens at 64x64 for that U-Net level)
SHAPES = [
    ("attn 320x320", 320, 320, 4096),
    ("attn 640x640", 640, 640, 1024),
    ("attn 1280x1280", 1280, 1280, 256),
    ("GEGLU 1280->10240", 1280, 10240, 256),
    ("ff 5120->1280", 5120, 1280, 256),
]
METHODS = ["lora", "dora", "lorad", "lorad-plain"]


def build(method: str, in_f: int, out_f: int, rank: int, device: str, dtype: torch.dtype) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    import dkd.lorad  # noqa: F401  (registers LoRaD with PEFT)
    from dkd.lorad import LoRaDConfig

    model = nn.Sequential(OrderedDict(layer=nn.Linear(in_f, out_f, device=device, dtype=dtype)))
    model.requires_grad_(False)
    if method.startswith("lorad"):
        config = LoRaDConfig(
            r=rank, target_modules=["layer"], init_weights="xavier_xavier", memory_efficient_backward=method == "lorad"
        )
    else:
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["layer"], use_dora=method == "dora")
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        if "lora" in name:  # fp32 adapters with a half-precision frozen layer, as in training
            p.data = p.data.float()
    return model


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(method, in_f, out_f, tokens, rank, device, dtype, repeats) -> dict:
    torch.manual_seed(0)
    model = build(method, in_f, out_f, rank, device, dtype)
    x = torch.randn(tokens, in_f, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(tokens, out_f, device=device, dtype=dtype)
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            out = model(x)
        out.backward(grad)
        x.grad = None
        for p in model.parameters():
            p.grad = None

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        step()
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss()
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    weight_bytes = in_f * out_f * torch.finfo(dtype).bits // 8
    return {"ms": 1000 * statistics.median(times), "peak": peak, "weight_bytes": weight_bytes}


def run_isolated(args, method, in_f, out_f, tokens) -> dict:
    """CPU: one process per measurement, so that the peak RSS belongs to that measurement."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        str(in_f),
        str(out_f),
        str(tokens),
        "--rank",
        str(args.rank),
        "--dtype",
        args.dtype,
        "--repeats",
        str(args.repeats),
    ]
    if args.block_elems:
        cmd += ["--block-elems", str(args.block_elems)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per step (ignored with --batch)")
    parser.add_argument("--batch", type=int, default=None, help="use SD1.5's 64x64 token counts x batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--block-elems",
        type=int,
        default=None,
        help="elements per row block of the memory-efficient backward (default: the library's)",
    )
    parser.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    from dkd.lorad import rotation

    if args.block_elems:
        rotation.BLOCK_ELEMS = args.block_elems
    if args.worker:
        method, in_f, out_f, tokens = args.worker[0], *map(int, args.worker[1:])
        print(json.dumps(measure(method, in_f, out_f, tokens, args.rank, "cpu", dtype, args.repeats)))
        return
    device = "cuda" if args.device == "cuda" else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"LoRaD layer benchmark: {name}, {args.dtype}, rank {args.rank}, torch {torch.__version__}, "
        f"row blocks of {rotation.BLOCK_ELEMS} elements\n"
    )
    print("| layer | tokens | method | fwd+bwd ms | x LoRA time | peak MiB | x LoRA peak | extra/W |")
    print("|---|---|---|---|---|---|---|---|")
    for label, in_f, out_f, level_tokens in SHAPES:
        tokens = level_tokens * args.batch if args.batch else args.tokens
        results = {}
        for method in METHODS:
            if device == "cpu":
                results[method] = run_isolated(args, method, in_f, out_f, tokens)
            else:
                results[method] = measure(method, in_f, out_f, tokens, args.rank, device, dtype, args.repeats)
        lora = results["lora"]
        for method, r in results.items():
            extra = (r["peak"] - lora["peak"]) / r["weight_bytes"]
            print(
                f"| {label} | {tokens} | {method} | {r['ms']:.1f} | {r['ms'] / lora['ms']:.2f} | "
                f"{r['peak'] / 2**20:.1f} | {r['peak'] / lora['peak']:.2f} | {extra:+.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
