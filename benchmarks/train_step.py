"""Samples/s and peak memory of one DKD training step (and the LoRA/DoRA/FT baselines).

The SD1.5-shaped U-Net and a CLIP ViT-L/14-shaped text encoder with random weights (no
download), 64x64 latents, bf16 autocast, frozen teacher in bf16, per-GPU batch 16: the
paper's setting (4.1). One table, one row per method.

Also printed: the time of one frozen teacher forward pass at the same batch (``fwd``) and the
step time in such passes (``step/fwd``; the step needs about 7: student forward and backward,
real model with CFG, fake model scoring, fake forward and backward). ``--profile DIR`` writes a
torch.profiler table of two steps per method (kernels by GPU time, and the ``dkd.*`` phases).

  python benchmarks/train_step.py                         # CUDA, all methods
  python benchmarks/train_step.py --methods lorad --channels-last --compile-blocks
  python benchmarks/train_step.py --methods lorad --channels-last --compile-blocks BasicTransformerBlock ResnetBlock2D
  python benchmarks/train_step.py --device cpu --backbone tiny-sd --per-device-batch 2 --steps 2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from dkd.adapters import AdapterSpec
from dkd.backbones import Teacher, backbone_spec, build_denoiser
from dkd.train.config import DistillConfig
from dkd.train.loop import Distiller

FAKE = {"lorad": ("lorad", 32), "lora": ("lorad", 32), "dora": ("lorad", 32), "ft": ("ft", 1)}


def make_teacher(backbone: str, tokenizer_dir: str | None, device: str, dtype: torch.dtype) -> Teacher:
    from diffusers import DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dkd.backbones.tiny import SCHEDULER_CONFIG, TINY_UNET_CONFIG, tiny_unet, write_clip_tokenizer

    spec = backbone_spec(backbone)
    if tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp()
        write_clip_tokenizer(tokenizer_dir)
    tiny = backbone == "tiny-sd"
    denoiser = tiny_unet(device) if tiny else build_denoiser(backbone, device=device)
    width = TINY_UNET_CONFIG["cross_attention_dim"] if tiny else denoiser.config.cross_attention_dim
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=width,
            intermediate_size=4 * width,
            projection_dim=width,
            num_hidden_layers=2 if tiny else 12,
            num_attention_heads=2 if tiny else 12,
        )
    )
    return Teacher(
        spec=spec,
        denoiser=denoiser.to(dtype).eval().requires_grad_(False),
        scheduler=DDPMScheduler.from_config(SCHEDULER_CONFIG),
        text_encoder=text.to(device, dtype).eval().requires_grad_(False),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
    )


def measure(method: str, args) -> dict:
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    teacher = make_teacher(args.backbone, args.tokenizer, args.device, dtype)
    fake_method, fake_rank = FAKE[method]
    config = DistillConfig(
        backbone=args.backbone,
        student=AdapterSpec(args.backbone, "student", method, rank=args.rank if method != "ft" else 1),
        fake=AdapterSpec(args.backbone, "fake", fake_method, rank=fake_rank),
        batch_size=args.per_device_batch,
        per_device_batch=args.per_device_batch,
        max_steps=10**9,
        mixed_precision="bf16" if args.device == "cuda" else "no",
        gradient_checkpointing=args.checkpointing,
        channels_last=args.channels_last,
        compile_blocks=args.compile_blocks,
    )
    prompts = [f"a photo of object number {i}, highly detailed" for i in range(args.per_device_batch * 4)]
    distiller = Distiller(config, teacher, prompts, tempfile.mkdtemp())
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    compile_start = time.perf_counter()
    for _ in range(args.warmup):
        distiller.train_step()
        distiller.step += 1
    sync()
    warmup_s = time.perf_counter() - compile_start
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        logs = distiller.train_step()
        distiller.step += 1
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
    if args.profile:
        profile(distiller, method, args, sync)
    fwd = forward_seconds(distiller, args, sync)
    trainable = sum(p.numel() for p in distiller.models["student"].parameters() if p.requires_grad)
    del distiller, teacher
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return {
        "samples_s": args.per_device_batch / seconds,
        "step_s": seconds,
        "peak_gb": peak,
        "fwd_s": fwd,
        "warmup_s": warmup_s,
        "trainable_m": trainable / 1e6,
        "loss_fake": float(logs["loss_fake"]),
    }


def forward_seconds(distiller: Distiller, args, sync, repeats: int = 5) -> float:
    """One forward pass of the frozen teacher at the per-device batch (bf16 autocast, no grad)."""
    teacher = distiller.teacher
    x = torch.randn(args.per_device_batch, *teacher.latent_shape, device=args.device)
    t = torch.full((args.per_device_batch,), 500, device=args.device)
    embeds = distiller.uncond.repeat(args.per_device_batch)
    times = []
    with torch.no_grad(), distiller.acc.autocast():
        for _ in range(repeats + 1):
            sync()
            start = time.perf_counter()
            teacher.predict(x, t, embeds)
            sync()
            times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


def profile(distiller: Distiller, method: str, args, sync) -> None:
    """Two steps under torch.profiler: the kernels by GPU time, then the dkd.* phases (CPU wall time
    of each phase; a phase that reads a value waits there for the GPU)."""
    from pathlib import Path

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    sync()
    with torch_profile(activities=activities) as prof:
        for _ in range(2):
            distiller.train_step()
            distiller.step += 1
        sync()
    events = prof.key_averages()
    key = "self_device_time_total" if args.device == "cuda" else "self_cpu_time_total"
    busy = sum(getattr(e, key, 0) for e in events if not e.key.startswith("dkd.")) / 2 / 1e3
    phases = [e for e in events if e.key.startswith("dkd.")]
    folder = Path(args.profile)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{method}: {key} summed over events, per step: {busy:.1f} ms",
        "",
        events.table(sort_by=key, row_limit=40),
        "",
        "phases (CPU wall ms per step): "
        + ", ".join(f"{e.key} {e.cpu_time_total / 2e3:.1f}" for e in sorted(phases, key=lambda e: e.key)),
    ]
    (folder / f"profile_{method}.txt").write_text("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="sd15", choices=["sd15", "sd21", "tiny-sd"])
    parser.add_argument("--methods", nargs="+", default=["lorad", "lora", "dora", "ft"], choices=list(FAKE))
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--per-device-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in student and fake")
    parser.add_argument("--channels-last", action="store_true", help="NHWC convolutions (DistillConfig.channels_last)")
    parser.add_argument(
        "--compile-blocks",
        nargs="*",
        metavar="CLASS",
        default=None,
        help="torch.compile the repeated blocks, or the modules of the named classes "
        "(e.g. BasicTransformerBlock ResnetBlock2D)",
    )
    parser.add_argument(
        "--compile-static",
        action="store_true",
        help="one static-shape graph per block shape (no automatic dynamic shapes)",
    )
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--profile", default=None, metavar="DIR", help="write profile_<method>.txt tables to DIR")
    parser.add_argument("--tokenizer", default=None, help="folder of a CLIP tokenizer (default: built from open_clip)")
    args = parser.parse_args(argv)
    args.compile_blocks = False if args.compile_blocks is None else tuple(args.compile_blocks) or True
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.compile_static:
        torch._dynamo.config.automatic_dynamic_shapes = False
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    blocks = "" if args.compile_blocks in (True, False) else f" ({' '.join(args.compile_blocks)})"
    speed = [
        flag
        for flag, on in (
            ("channels_last", args.channels_last),
            ("compile_blocks" + blocks, args.compile_blocks),
            ("static shapes", args.compile_static),
            ("cudnn.benchmark", args.cudnn_benchmark),
            ("gradient_checkpointing", args.checkpointing),
        )
        if on
    ]
    print(
        f"DKD train step: {args.backbone}, {name}, per-device batch {args.per_device_batch}, "
        f"student rank {args.rank}, fake LoRaD r32 (FT: fake FT), {', '.join(speed) or 'no speed options'}, "
        f"torch {torch.__version__}\n"
    )
    print("| student | trainable (M) | samples/s | s/step | fwd s | step/fwd | peak GiB | warm-up s | loss_fake |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        r = measure(method, args)
        print(
            f"| {method} | {r['trainable_m']:.2f} | {r['samples_s']:.1f} | {r['step_s']:.3f} | {r['fwd_s']:.3f} | "
            f"{r['step_s'] / r['fwd_s']:.1f} | {r['peak_gb']:.1f} | {r['warmup_s']:.0f} | {r['loss_fake']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
