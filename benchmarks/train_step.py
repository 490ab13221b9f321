"""Samples/s and peak memory of one training step: DKD per student method, and the reproduced baselines.

The SD1.5-shaped U-Net and a CLIP ViT-L/14-shaped text encoder with random weights (no
download), 64x64 latents, bf16 autocast, frozen teacher in bf16, per-GPU batch 16: the
paper's setting (4.1). One table, one row per (objective, student) measured; ``--objectives``
picks the objectives (default: all), ``--methods`` and ``--rank`` DKD's rows only:

* ``dkd``: a row per student of ``--methods``, run ``{method}-s{rank}-f32-linear-zero`` (LoRaD r32
  fake) or ``ft-sfull-fft-linear-zero`` (FT student and fake: DMD2's objective);
* ``sid_lsg``: one row, its paper run ``sidlsg-ft-sfull-fft-linear-zero`` (FT student, FT fake);
* ``swiftbrush``: one row, ``swiftbrush-ft-sfull-flora64-linear-zero`` (FT student, LoRA r64 fake).

So ``--methods lorad`` measures DKD's LoRaD row and both baselines' rows; ``--objectives dkd
--methods lorad`` DKD's LoRaD row alone. A row's student and fake are its run name's
(``dkd.runs.parse_run_name``), its optimisers (betas, weight decay, clipping, learning rates) its
run's in ``--config`` (``distill.settings``, then ``distill.objectives.<objective>`` and
``distill.run_settings.<run>``); the rest (batch, precision, speed options, both models updated every
step) is the benchmark's. SiD-LSG's recipe trains at per-device batch 4: a row that does not fit in
GPU memory prints "out of memory" and the next row runs.

Also printed: the time of one frozen teacher forward pass at the same batch (``fwd``) and the
step time in such passes (``step/fwd``). DKD's step needs about 7: student forward and backward,
real model with CFG, fake model scoring, fake forward and backward. SwiftBrush's has the same parts,
with CFG on the fake's scoring too. SiD-LSG's costs more passes: its fake model trains first, on
samples of its own (one more student forward) and with CFG on its output, and its generator loss
backpropagates through the real and the fake model (both with CFG) into the student.
``--profile DIR`` writes a torch.profiler table of two steps per row (kernels by GPU time, and the
``dkd.*`` phases).

  python benchmarks/train_step.py                         # CUDA, all objectives, all DKD methods
  python benchmarks/train_step.py --objectives dkd --methods lorad --channels-last --compile-blocks
  python benchmarks/train_step.py --objectives sid_lsg swiftbrush --per-device-batch 4
  python benchmarks/train_step.py --device cpu --backbone tiny-sd --per-device-batch 2 --steps 2
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch

from dkd.backbones import Teacher, backbone_spec, build_denoiser
from dkd.runs import parse_run_name
from dkd.train.cli import read_settings
from dkd.train.config import DistillConfig
from dkd.train.loop import Distiller
from dkd.train.run import run_config

DKD_METHODS = ("lorad", "lora", "dora", "ft")
# The reproduced baselines' paper runs (config/config.yaml distill.runs), by the objective each name says.
BASELINE_RUNS = {
    parse_run_name("sd15", run).objective: run
    for run in (
        "sidlsg-ft-sfull-fft-linear-zero",
        "swiftbrush-ft-sfull-flora64-linear-zero",
        "pgsb-ft-sfull-flora64-linear-zero",
        "sbv2-lora-s256-flora64-linear-zero",
    )
}
OBJECTIVE_CHOICES = ("dkd", *BASELINE_RUNS)
CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def dkd_run(method: str, rank: int) -> str:
    """DKD's run name of student ``method``: rank ``rank`` with a LoRaD r32 fake, or FT with an FT fake."""
    return "ft-sfull-fft-linear-zero" if method == "ft" else f"{method}-s{rank}-f32-linear-zero"


def rows(args) -> list[tuple[str, str]]:
    """``(objective, run name)`` of each row, in the order of ``--objectives`` (DKD's in ``--methods``')."""
    dkd = [("dkd", dkd_run(method, args.rank)) for method in dict.fromkeys(args.methods)]
    return [row for o in dict.fromkeys(args.objectives) for row in (dkd if o == "dkd" else [(o, BASELINE_RUNS[o])])]


def row_config(run: str, args) -> DistillConfig:
    """Run ``run``'s student, fake, objective and optimisers (``--config``), the benchmark's other settings."""
    settings, _ = read_settings(args.config, args.backbone, run)
    optimisers = {key: settings[key] for key in ("optim_student", "optim_fake") if key in settings}
    return run_config(
        args.backbone,
        run,
        {
            **optimisers,
            "batch_size": args.per_device_batch,
            "per_device_batch": args.per_device_batch,
            "max_steps": 10**9,
            "mixed_precision": "bf16" if args.device == "cuda" else "no",
            "gradient_checkpointing": args.checkpointing,
            "channels_last": args.channels_last,
            "compile_blocks": args.compile_blocks,
        },
    )


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


def random_scorer(config: DistillConfig, device: str):
    """For an objective with the clamped CLIP loss (PG-SB, SwiftBrush v2): its scorer's architecture (TAESD,
    open_clip ViT-B-32) with random weights, which costs what the real one does; else None."""
    if not config.objective.scored:
        return None
    import open_clip
    from diffusers import AutoencoderTiny

    from dkd.train.scorers import CLIP_MODEL, ClipScorer

    scorer = ClipScorer(AutoencoderTiny(), open_clip.create_model(CLIP_MODEL), open_clip.get_tokenizer(CLIP_MODEL))
    return scorer.to(device).eval().requires_grad_(False)


def measure(config: DistillConfig, label: str, args) -> dict:
    """Warm-up, then the mean time and peak memory of ``--steps`` steps of ``config``; ``fwd`` and the
    trainable parameters (millions) of the student and the fake."""
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    teacher = make_teacher(args.backbone, args.tokenizer, args.device, dtype)
    prompts = [f"a photo of object number {i}, highly detailed" for i in range(args.per_device_batch * 4)]
    distiller = Distiller(config, teacher, prompts, tempfile.mkdtemp(), scorer=random_scorer(config, args.device))
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
        profile(distiller, label, args, sync)
    fwd = forward_seconds(distiller, args, sync)
    trainable = {
        role: sum(p.numel() for p in distiller.models[role].parameters() if p.requires_grad) / 1e6
        for role in ("student", "fake")
    }
    del distiller, teacher
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return {
        "samples_s": args.per_device_batch / seconds,
        "step_s": seconds,
        "peak_gb": peak,
        "fwd_s": fwd,
        "warmup_s": warmup_s,
        "trainable_m": trainable["student"],
        "fake_trainable_m": trainable["fake"],
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


def profile(distiller: Distiller, label: str, args, sync) -> None:
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
        f"{label}: {key} summed over events, per step: {busy:.1f} ms",
        "",
        events.table(sort_by=key, row_limit=40),
        "",
        "phases (CPU wall ms per step): "
        + ", ".join(f"{e.key} {e.cpu_time_total / 2e3:.1f}" for e in sorted(phases, key=lambda e: e.key)),
    ]
    (folder / f"profile_{label}.txt").write_text("\n".join(lines))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="sd15", choices=["sd15", "sd21", "tiny-sd"])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVE_CHOICES), choices=OBJECTIVE_CHOICES)
    parser.add_argument("--methods", nargs="+", default=list(DKD_METHODS), choices=DKD_METHODS, help="DKD's students")
    parser.add_argument("--rank", type=int, default=256, help="DKD's LoRaD/LoRA/DoRA student rank (its rows only)")
    parser.add_argument("--config", default=str(CONFIG), help="workflow config of each run's optimisers")
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
    parser.add_argument("--profile", metavar="DIR", help="write profile_<[objective-]method>.txt tables to DIR")
    parser.add_argument("--tokenizer", default=None, help="folder of a CLIP tokenizer (default: built from open_clip)")
    args = parser.parse_args(argv)
    args.compile_blocks = False if args.compile_blocks is None else tuple(args.compile_blocks) or True
    return args


def print_header(args) -> None:
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
        f"Train step ({', '.join(dict.fromkeys(args.objectives))}): {args.backbone}, {name}, "
        f"per-device batch {args.per_device_batch}, optimisers of {args.config}, "
        f"{', '.join(speed) or 'no speed options'}, torch {torch.__version__}\n"
    )
    print(
        "| objective | student | fake | trainable (M) | fake trainable (M) | samples/s | s/step | fwd s | step/fwd "
        "| peak GiB | warm-up s | loss_fake |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")


def measure_row(objective: str, run: str, args) -> str:
    """One table row: ``run``'s step measured, or "out of memory" where it does not fit on the GPU."""
    config = row_config(run, args)
    student, fake = ("ft" if m.method == "ft" else f"{m.method} r{m.rank}" for m in (config.student, config.fake))
    label = config.student.method if objective == "dkd" else f"{objective}-{config.student.method}"
    try:
        r = measure(config, label, args)
    except torch.OutOfMemoryError:
        r = None
    if r is None:  # the failed step's tensors are free once the exception is gone
        gc.collect()
        torch.cuda.empty_cache()
        return f"| {objective} | {student} | {fake} | out of memory |" + " |" * 8
    return (
        f"| {objective} | {student} | {fake} | {r['trainable_m']:.2f} | {r['fake_trainable_m']:.2f} | "
        f"{r['samples_s']:.1f} | {r['step_s']:.3f} | {r['fwd_s']:.3f} | {r['step_s'] / r['fwd_s']:.1f} | "
        f"{r['peak_gb']:.1f} | {r['warmup_s']:.0f} | {r['loss_fake']:.4f} |"
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.compile_static:
        torch._dynamo.config.automatic_dynamic_shapes = False
    print_header(args)
    for objective, run in rows(args):
        print(measure_row(objective, run, args), flush=True)


if __name__ == "__main__":
    main()
