"""Sharded image generation for evaluation: one-step students, multi-step teachers and
published checkpoints, one seed per image index (``shared/reference.md`` section 3).

An evaluation set is a list of prompts; image ``i`` is generated from prompt ``i`` with seed
``seed + i`` and written to ``<folder>/<i:05d>.png`` (or, for HPSv2, ``<style>/<i:05d>.jpg``
by the caller's layout). A shard is an index range: images already on disk are skipped, each
image is written atomically, so a killed job resumes and any shard can be regenerated alone.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, Sequence

import torch
from PIL import Image


class Sampler(Protocol):
    """Anything that turns prompts and one seed per prompt into PIL images."""

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16) -> list[Image.Image]:
        ...


@dataclass(frozen=True)
class MultiStepSpec:
    """A multi-step diffusers text-to-image model: a teacher row of Tables 1/5/6/9, or a published
    checkpoint (SD-Turbo, Hyper-SD, LCM-LoRA, YOSO, TiUE, DMD2 ...).

    ``source``: hub id or local diffusers folder; ``adapter``: optional LoRA weights loaded with
    ``pipe.load_lora_weights`` (``adapter_weight_name`` picks the file) and fused;
    ``scheduler``: a diffusers scheduler class name (None keeps the checkpoint's);
    ``timesteps``: explicit timesteps for schedulers that accept them (one-step LCM/TCD-style
    checkpoints), else ``steps``; ``guidance_scale`` as in diffusers (1.0 = no CFG).
    """

    source: str
    steps: int = 25
    guidance_scale: float = 3.0
    scheduler: Optional[str] = None
    scheduler_kwargs: dict = field(default_factory=dict)
    timesteps: Optional[tuple[int, ...]] = None
    adapter: Optional[str] = None
    adapter_weight_name: Optional[str] = None
    resolution: Optional[int] = None

    def __post_init__(self):
        if self.steps <= 0 or self.guidance_scale < 0:
            raise ValueError(f"steps must be > 0 and guidance_scale >= 0; got {self.steps}, {self.guidance_scale}.")


class DiffusersSampler:
    """A diffusers text-to-image pipeline run as ``MultiStepSpec`` says, one generator per image."""

    def __init__(self, spec: MultiStepSpec, *, dtype: torch.dtype = torch.float32, device="cpu"):
        import diffusers
        from diffusers import DiffusionPipeline

        local = Path(spec.source).expanduser().is_dir()
        pipe = DiffusionPipeline.from_pretrained(spec.source, dtype=dtype, local_files_only=local)
        if spec.scheduler:
            scheduler_cls = getattr(diffusers, spec.scheduler)
            pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **spec.scheduler_kwargs)
        if spec.adapter:
            pipe.load_lora_weights(spec.adapter, weight_name=spec.adapter_weight_name)
            pipe.fuse_lora()
        if hasattr(pipe, "safety_checker"):
            pipe.safety_checker = None
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.spec, self.device = pipe.to(device), spec, torch.device(device)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16) -> list[Image.Image]:
        spec, images = self.spec, []
        schedule = {"timesteps": list(spec.timesteps)} if spec.timesteps else {"num_inference_steps": spec.steps}
        size = {"height": spec.resolution, "width": spec.resolution} if spec.resolution else {}
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + batch_size]]
            out = self.pipe(chunk, guidance_scale=spec.guidance_scale, generator=generators, output_type="pil",
                            **schedule, **size)
            images += out.images
        return images


def image_path(folder: str | os.PathLike, index: int, suffix: str = ".png") -> Path:
    return Path(folder) / f"{index:05d}{suffix}"


def _save_atomic(image: Image.Image, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        image.save(tmp, quality=95) if path.suffix in (".jpg", ".jpeg") else image.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _match_fingerprint(folder: Path, start: int, end: int, suffix: str, fingerprint: str) -> None:
    marker = folder / f".sampler-{start:05d}-{end:05d}"
    if marker.is_file() and marker.read_text() == fingerprint:
        return
    for index in range(start, end):
        image_path(folder, index, suffix).unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sampler.")
    with os.fdopen(fd, "w") as handle:
        handle.write(fingerprint)
    os.replace(tmp, marker)


def generate_shard(
    sampler: Sampler,
    prompts: Sequence[str],
    folder: str | os.PathLike,
    *,
    start: int = 0,
    end: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 16,
    suffix: str = ".png",
    progress: bool = True,
    fingerprint: Optional[str] = None,
) -> dict:
    """Generate images ``start..end-1`` of ``prompts`` into ``folder`` (skipping existing ones).

    ``fingerprint`` identifies the sampler (model weights, settings, seed): when the one recorded
    for this index range differs, the range's images are deleted and generated again, so a
    retrained model never keeps the old model's images. Returns counts:
    ``{"written": n, "skipped": m, "start": start, "end": end}``.
    """
    from tqdm.auto import tqdm

    end = len(prompts) if end is None else min(end, len(prompts))
    if not 0 <= start <= end:
        raise ValueError(f"need 0 <= start <= end <= {len(prompts)}; got start={start}, end={end}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fingerprint is not None:
        _match_fingerprint(folder, start, end, suffix, fingerprint)
    todo = [i for i in range(start, end) if not image_path(folder, i, suffix).is_file()]
    bar = tqdm(total=len(todo), disable=not progress, desc=f"generate {folder.name}")
    for k in range(0, len(todo), batch_size):
        indices = todo[k:k + batch_size]
        images = sampler([prompts[i] for i in indices], [seed + i for i in indices], batch_size=batch_size)
        for index, image in zip(indices, images):
            _save_atomic(image, image_path(folder, index, suffix))
        bar.update(len(indices))
    bar.close()
    return {"written": len(todo), "skipped": end - start - len(todo), "start": start, "end": end}
