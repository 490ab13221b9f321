"""Inference time of Table 5.

Table 5's "Inference" column is the wall-clock time of one text-to-image call at batch 1,
*including* the text encoder and the VAE decoder (the paper's note under Table 6; diffusers
0.25.0 on an NVIDIA A40, PyTorch 2.4.0; appendix F.4). :func:`time_pipeline` times exactly that:
prompt in, PIL image out, for our samplers (``dkd.sampling.pipeline.OneStepPipeline`` /
``MultiStepPipeline``, ``dkd.sampling.samplers.DiffusersSampler``: ``sampler([prompt], [seed])``)
and for a plain diffusers pipeline (``pipe(prompt, generator=..., **call_kwargs).images[0]``).
:func:`time_call` is the clock: warm-up calls first (CUDA kernels, cuDNN autotuning, allocator),
then ``repeats`` timed calls with ``time.perf_counter``, the device synchronised before and after
each one so asynchronous CUDA work is inside the interval. The median is the number to report.

The "Trainable params" of Table 5 (adapter sizes on the meta device) are ``dkd.params``.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

WARMUP = 3
REPEATS = 20


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_name() -> str:
    """The CPU model (``model name`` of ``/proc/cpuinfo``), else ``platform.processor()`` / machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device=None) -> str:
    """``torch.cuda.get_device_name`` for a CUDA device, else the CPU model (:func:`cpu_name`)."""
    device = _device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timing_summary(times: list[float]) -> dict:
    """``{"median_s", "mean_s", "std_s", "min_s", "repeats"}`` of per-call times in seconds;
    ``std_s`` is the sample standard deviation (``statistics.stdev``), 0 for a single call."""
    if not times:
        raise ValueError("timing_summary needs at least one time")
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "min_s": min(times),
        "repeats": len(times),
    }


def time_call(
    fn: Callable[[], Any],
    *,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    device=None,
    progress: bool = False,
    desc: str = "timing",
) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` calls timed one by one.

    Each timed call is bracketed by ``time.perf_counter()``, with the device synchronised
    before the first reading and before the second (CUDA / MPS; ``device`` defaults to CUDA
    when available, else CPU). Returns :func:`timing_summary` plus ``"warmup"``, ``"times_s"``,
    ``"device"`` (:func:`device_name`), ``"device_type"`` and ``"torch"`` (version).
    """
    if not callable(fn):
        raise TypeError(f"time_call needs a callable, got {type(fn).__name__}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    device = _device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in tqdm(range(repeats), desc=desc, unit="call", disable=not progress):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    if not all(math.isfinite(t) and t >= 0 for t in times):
        raise RuntimeError(f"time_call: the clock went backwards or is not finite: {times}")
    return {**timing_summary(times), "warmup": warmup, "times_s": times, "device": device_name(device),
            "device_type": device.type, "torch": torch.__version__}  # fmt: skip


def _is_diffusers_pipeline(pipe) -> bool:
    try:
        from diffusers import DiffusionPipeline
    except ImportError:  # pragma: no cover - diffusers is a dependency
        return False
    return isinstance(pipe, DiffusionPipeline)


def pipeline_device(pipe) -> torch.device | None:
    """Where ``pipe`` runs: a diffusers pipeline's ``.device``, a sampler's ``.pipe`` / teacher
    denoiser, else None."""
    if _is_diffusers_pipeline(pipe):
        return pipe.device
    inner = getattr(pipe, "pipe", None)
    if inner is not None and _is_diffusers_pipeline(inner):
        return inner.device
    teacher = getattr(pipe, "teacher", None)
    if teacher is not None:
        return next(teacher.denoiser.parameters()).device
    return None


def text_to_image(pipe, prompt: str, *, seed: int = 0, **call_kwargs) -> Callable[[], Image.Image]:
    """A no-argument callable producing the PIL image of ``prompt`` at batch 1, as
    :func:`time_pipeline` times it: a diffusers pipeline is called
    ``pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="pil", **call_kwargs)``
    (e.g. ``num_inference_steps=25, guidance_scale=3.0``), anything else as our samplers,
    ``pipe([prompt], [seed], **call_kwargs)[0]``. A fresh generator each call keeps every call
    the same work."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be one string (batch 1), got {type(prompt).__name__}")
    if _is_diffusers_pipeline(pipe):

        def run():
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                return pipe(prompt, generator=generator, output_type="pil", **call_kwargs).images[0]
    elif callable(pipe):

        def run():
            with torch.no_grad():
                return pipe([prompt], [seed], **call_kwargs)[0]
    else:
        raise TypeError(f"time_pipeline needs a diffusers pipeline or a sampler callable, got {type(pipe).__name__}")
    return run


def time_pipeline(
    pipe,
    prompt: str,
    *,
    seed: int = 0,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    device=None,
    progress: bool = False,
    **call_kwargs,
) -> dict:
    """Seconds per text-to-image call at batch 1, text encoder and VAE included (Table 5).

    ``pipe``: a diffusers ``DiffusionPipeline`` or a ``(prompts, seeds) -> images`` sampler
    (``OneStepPipeline``, ``DiffusersSampler``, any adapter with that signature); see
    :func:`text_to_image`. ``device`` (for synchronisation and the device name) defaults to
    the pipeline's. The first warm-up call must return a PIL image. Returns :func:`time_call`'s
    dict plus ``"pipeline"`` (class name), ``"prompt"``, ``"seed"``, ``"call_kwargs"`` and
    ``"image_size"`` ``[width, height]``.
    """
    run = text_to_image(pipe, prompt, seed=seed, **call_kwargs)
    first = run()
    if not isinstance(first, Image.Image):
        raise TypeError(f"{type(pipe).__name__} returned {type(first).__name__}, not a PIL image, for one prompt")
    device = device if device is not None else pipeline_device(pipe)
    result = time_call(run, warmup=max(warmup - 1, 0), repeats=repeats, device=device, progress=progress,
                       desc=f"timing {type(pipe).__name__}")  # fmt: skip
    result["warmup"] = max(warmup, 1)
    return {**result, "pipeline": type(pipe).__name__, "prompt": prompt, "seed": seed,
            "call_kwargs": {k: repr(v) if not isinstance(v, (int, float, str, bool, type(None))) else v
                            for k, v in call_kwargs.items()},
            "image_size": list(first.size)}  # fmt: skip
