"""Sharded image generation for evaluation: one-step students, multi-step teachers and
published checkpoints, one seed per image index (``docs/reference.md`` section 3).

An evaluation set is a list of prompts; image ``i`` is generated from prompt ``i`` with seed
``seed + i`` and written to ``<folder>/<i:05d>.png``: lossless PNG for every set, HPSv2's
included (the ``hpsv2`` package's own layout is ``<style>/<i:05d>.jpg``; its scores differ from
ours only by the JPEG loss). A shard is an index range: images already on disk are skipped, each
image is written atomically, so a killed job resumes and any shard can be regenerated alone.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from .io import image_path
from .vocabulary import PUBLISHED_PREFIX, model_kind, published_name


class Sampler(Protocol):
    """Anything that turns prompts and one seed per prompt into PIL images."""

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16) -> list[Image.Image]: ...


@dataclass(frozen=True)
class MultiStepSpec:
    """A multi-step diffusers text-to-image model: a teacher row of Tables 1/5/6/9, or a published
    checkpoint (SD-Turbo, Hyper-SD, LCM-LoRA, YOSO, InstaFlow, DMD2 ...; see ``dkd.published``).

    ``source``: hub id or local diffusers folder; ``custom_pipeline``: the name of a diffusers
    *community* pipeline to run the folder with (InstaFlow's ``instaflow_one_step``; fetched from
    diffusers' own mirror, so no third-party code runs);
    ``denoiser_weights``: a state dict that replaces the whole U-Net/transformer (DMD2 ships one):
    a local file, a local folder + ``denoiser_weight_name``, or a hub repo + ``denoiser_weight_name``;
    ``denoiser_from``: a hub repo or folder whose ``unet/`` or ``transformer/`` (config and weights)
    replaces the pipeline's denoiser (PixArt-α 256, whose repo holds only ``transformer/``: the
    rest comes from ``source``, ``dkd.backbones.components_source``);
    ``adapter``: optional LoRA weights loaded with ``pipe.load_lora_weights``
    (``adapter_weight_name`` picks the file), fused at ``adapter_scale``;
    ``scheduler``: a diffusers scheduler class name, built ``from_config`` of the checkpoint's
    scheduler with ``scheduler_kwargs`` (e.g. ``timestep_spacing="trailing"``); None keeps the
    checkpoint's; ``timesteps``: explicit descending timesteps for schedulers that accept them
    (one-step LCM-style checkpoints conditioned on t=999), else ``steps``; ``eta``: passed to the
    pipeline call when set (TCD's stochasticity); ``guidance_scale`` as in diffusers (<= 1: no CFG).
    """

    source: str
    steps: int = 25
    guidance_scale: float = 3.0
    scheduler: str | None = None
    scheduler_kwargs: dict = field(default_factory=dict)
    timesteps: tuple[int, ...] | None = None
    adapter: str | None = None
    adapter_weight_name: str | None = None
    resolution: int | None = None
    adapter_scale: float = 1.0
    denoiser_weights: str | None = None
    denoiser_weight_name: str | None = None
    eta: float | None = None
    custom_pipeline: str | None = None
    denoiser_from: str | None = None

    def __post_init__(self):
        if self.steps <= 0 or self.guidance_scale < 0:
            raise ValueError(f"steps must be > 0 and guidance_scale >= 0; got {self.steps}, {self.guidance_scale}.")
        if not isinstance(self.scheduler_kwargs, dict):
            raise ValueError(f"scheduler_kwargs must be a mapping; got {self.scheduler_kwargs!r}.")
        if self.scheduler is None and self.scheduler_kwargs:
            raise ValueError("scheduler_kwargs need a scheduler class name (scheduler=None keeps the checkpoint's).")
        if self.timesteps is not None:
            steps = tuple(self.timesteps)
            if (
                not steps
                or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in steps)
                or any(a <= b for a, b in zip(steps, steps[1:]))
            ):
                raise ValueError(
                    f"timesteps must be non-negative integers in descending order; got {self.timesteps!r}."
                )
            object.__setattr__(self, "timesteps", steps)
        if self.adapter_weight_name and not self.adapter:
            raise ValueError("adapter_weight_name is set but adapter is not.")
        if self.denoiser_weight_name and not self.denoiser_weights:
            raise ValueError("denoiser_weight_name is set but denoiser_weights is not.")
        if not math.isfinite(self.adapter_scale):
            raise ValueError(f"adapter_scale must be finite; got {self.adapter_scale}.")
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1]; got {self.eta}.")
        if self.resolution is not None and (self.resolution <= 0 or self.resolution % 8):
            raise ValueError(f"resolution must be a positive multiple of 8; got {self.resolution}.")
        if self.custom_pipeline is not None and not COMMUNITY_PIPELINE.match(self.custom_pipeline):
            raise ValueError(
                f"custom_pipeline must name a diffusers community pipeline (letters, digits, '_'); got "
                f"{self.custom_pipeline!r}: local files and hub repos would run unreviewed code."
            )


COMMUNITY_PIPELINE = re.compile(r"^[A-Za-z0-9_]+$")


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class called ``name``, with one clear error for anything else."""
    import diffusers
    from diffusers import SchedulerMixin

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"{name!r} is not a diffusers scheduler class (diffusers {diffusers.__version__}).")
    return cls


def _denoiser_file(spec: MultiStepSpec) -> Path:
    """The local path of ``spec.denoiser_weights`` (downloaded from the hub when it is a repo id)."""
    location, name = Path(spec.denoiser_weights).expanduser(), spec.denoiser_weight_name
    if location.is_file():
        return location
    if not name:
        raise ValueError(
            f"denoiser_weights {spec.denoiser_weights!r} is a folder or hub repo: "
            "denoiser_weight_name must name the file in it."
        )
    if location.is_dir():
        if not (location / name).is_file():
            raise FileNotFoundError(f"no denoiser weights {name!r} in {location}")
        return location / name
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(spec.denoiser_weights, name))
    except Exception as error:  # noqa: BLE001 - one clear error whatever the hub client raises
        raise FileNotFoundError(
            f"denoiser weights {name!r}: {spec.denoiser_weights!r} is no local file or folder, and the hub "
            f"download failed: {type(error).__name__}: {error}"
        ) from error


def _denoiser_part(spec: MultiStepSpec, dtype: torch.dtype) -> dict:
    """{"unet" or "transformer": the denoiser of ``spec.denoiser_from``}, loaded with the class that
    ``spec.source``'s ``model_index.json`` names, to be passed to ``from_pretrained`` in its place."""
    import diffusers

    index = diffusers.DiffusionPipeline.load_config(spec.source, local_files_only=Path(spec.source).is_dir())
    name = next((key for key in ("unet", "transformer") if key in index), None)
    if name is None:
        raise ValueError(
            f"{spec.source}: the pipeline has neither a unet nor a transformer to take from {spec.denoiser_from}."
        )
    model_class = getattr(diffusers, index[name][1])
    return {
        name: model_class.from_pretrained(
            spec.denoiser_from, subfolder=name, dtype=dtype, local_files_only=Path(spec.denoiser_from).is_dir()
        )
    }


def _replace_denoiser(pipe, spec: MultiStepSpec) -> None:
    """Load a full U-Net/transformer state dict into the pipeline's denoiser; every key must match."""
    from .analysis.io import load_state_dict

    path = _denoiser_file(spec)
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else getattr(pipe, "transformer", None)
    if denoiser is None:
        raise ValueError(f"{spec.source}: the pipeline has neither a unet nor a transformer to load {path} into.")
    state = load_state_dict(path)
    try:
        result = denoiser.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{path} does not fit the denoiser of {spec.source}: {error}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit the denoiser of {spec.source}: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:3]})."
        )


COMMUNITY_MIRROR = "diffusers/community-pipelines-mirror"  # the dataset diffusers fetches community code from


def community_pipeline_file(name: str) -> str:
    """The code of diffusers community pipeline ``name`` at this diffusers release, as a local file
    (downloaded from diffusers' mirror dataset, or found in the hub cache).

    This is the file ``from_pretrained(custom_pipeline=name)`` loads, but diffusers first asks PyPI
    for its release list (``get_diffusers_versions``) whatever ``HF_HUB_OFFLINE`` says, which fails
    on a node without network; resolved here, the mirror file comes from the cache like any hub file.
    """
    import diffusers
    from huggingface_hub import hf_hub_download

    if not COMMUNITY_PIPELINE.match(name):
        raise ValueError(f"{name!r} is no diffusers community pipeline name (letters, digits, '_')")
    release = "v" + ".".join(diffusers.__version__.split(".")[:3])
    return hf_hub_download(COMMUNITY_MIRROR, f"{release}/{name}.py", repo_type="dataset")


def community_pipeline_kwargs(name: str | None) -> dict:
    """``DiffusionPipeline.from_pretrained``/``download`` arguments that run community pipeline
    ``name`` from its mirror file (trusted as diffusers trusts it by name); none for ``None``."""
    return {"custom_pipeline": community_pipeline_file(name), "trust_remote_code": True} if name else {}


class DiffusersSampler:
    """A diffusers text-to-image pipeline run as ``MultiStepSpec`` says, one generator per image.

    Built in this order: the pipeline (community pipeline if named), the denoiser replacement,
    the scheduler, then the LoRA, fused into the weights and unloaded (plain layers at run time).
    """

    def __init__(self, spec: MultiStepSpec, *, dtype: torch.dtype = torch.float32, device="cpu"):
        from diffusers import DiffusionPipeline

        local = Path(spec.source).expanduser().is_dir()
        parts = _denoiser_part(spec, dtype) if spec.denoiser_from else {}
        pipe = DiffusionPipeline.from_pretrained(
            spec.source, dtype=dtype, local_files_only=local, **parts, **community_pipeline_kwargs(spec.custom_pipeline)
        )
        if spec.denoiser_weights:
            _replace_denoiser(pipe, spec)
        if spec.scheduler:
            pipe.scheduler = scheduler_class(spec.scheduler).from_config(pipe.scheduler.config, **spec.scheduler_kwargs)
        if spec.adapter:
            pipe.load_lora_weights(spec.adapter, weight_name=spec.adapter_weight_name)
            pipe.fuse_lora(lora_scale=spec.adapter_scale)
            pipe.unload_lora_weights()
        if hasattr(pipe, "safety_checker"):
            pipe.safety_checker = None
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.spec, self.device = pipe.to(device), spec, torch.device(device)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16) -> list[Image.Image]:
        spec, images = self.spec, []
        options = {"timesteps": list(spec.timesteps)} if spec.timesteps else {"num_inference_steps": spec.steps}
        if spec.resolution:
            options.update(height=spec.resolution, width=spec.resolution)
        if spec.eta is not None:
            options["eta"] = spec.eta
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch_size]]
            out = self.pipe(
                chunk, guidance_scale=spec.guidance_scale, generator=generators, output_type="pil", **options
            )
            images += out.images
        return images


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
    end: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    suffix: str = ".png",
    progress: bool = True,
    fingerprint: str | None = None,
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
        indices = todo[k : k + batch_size]
        images = sampler([prompts[i] for i in indices], [seed + i for i in indices], batch_size=batch_size)
        for index, image in zip(indices, images):
            _save_atomic(image, image_path(folder, index, suffix))
        bar.update(len(indices))
    bar.close()
    return {"written": len(todo), "skipped": end - start - len(todo), "start": start, "end": end}


def published_spec(backbone: str, model: str, catalog: str | None = None) -> MultiStepSpec:
    """The sampling spec of the published checkpoint ``pub-<name>`` of ``catalog`` (default
    ``config/published.yaml``), which must belong to ``backbone``."""
    from .published import load_published

    name = published_name(model)
    entries = load_published(catalog, check_paper=catalog is None)
    where = catalog or "config/published.yaml"
    if name not in entries:
        raise ValueError(
            f"{model!r}: no published checkpoint {name!r} in {where}; known: "
            f"{', '.join(PUBLISHED_PREFIX + k for k in sorted(entries))}."
        )
    if entries[name].backbone != backbone:
        raise ValueError(f"{model!r} is a {entries[name].backbone} checkpoint ({where}), not {backbone}.")
    return entries[name].to_spec()


def make_sampler(
    backbone: str,
    model: str,
    *,
    source: str,
    teacher: dict | None = None,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    catalog: str | None = None,
) -> Sampler:
    """The sampler of one evaluated model of ``backbone``:

    * a distillation run: its exported one-step student, ``source`` = the ``pipeline/`` folder;
    * ``"teacher"``: the teacher at ``source`` in ``teacher["steps"]`` steps with CFG
      (``teacher``: ``MultiStepSpec`` fields) — the diffusers pipeline for latent backbones,
      ``dkd.pipeline.MultiStepPipeline`` for pixel-space ones (the toy);
    * ``"teacher-1step"``: the teacher at ``source`` used as a one-step generator (no training),
      the "teacher run in one step" row;
    * ``"pub-<name>"``: a published checkpoint of ``catalog`` as its model card samples it
      (:func:`published_spec`; ``source`` is not used).
    """
    from .backbones import backbone_spec, components_source
    from .pipeline import MultiStepPipeline, OneStepPipeline

    kind = model_kind(model)
    if kind == "published":
        return DiffusersSampler(published_spec(backbone, model, catalog), dtype=dtype, device=device)
    if kind == "teacher":
        if not teacher:
            raise ValueError(f"no multi-step settings for the teacher of {backbone!r} (evaluation.teachers).")
        if backbone_spec(backbone).latent:
            parts = components_source(backbone, source)  # a hub repo with only the denoiser: PixArt-α 256
            where = {"source": parts, "denoiser_from": source} if parts else {"source": source}
            return DiffusersSampler(MultiStepSpec(**{**teacher, **where}), dtype=dtype, device=device)
        extra = {key: teacher[key] for key in ("scheduler", "scheduler_kwargs") if teacher.get(key)}
        return MultiStepPipeline.from_pretrained(
            source,
            backbone=backbone,
            dtype=dtype,
            device=device,
            steps=teacher.get("steps", 25),
            guidance_scale=teacher.get("guidance_scale", 3.0),
            **extra,
        )
    return OneStepPipeline.from_pretrained(source, backbone=backbone, dtype=dtype, device=device)  # run, teacher-1step


def sampler_fingerprint(source: str, settings, seed: int, prompts: Sequence[str]) -> str:
    """The identity of a shard's images: the model's files (names, sizes, mtimes; a hub id as
    text), the sampling settings, the seed and the shard's prompts. Images written under another
    fingerprint are regenerated (``generate_shard``)."""
    import hashlib
    import json

    folder = Path(source)
    files = (
        sorted(
            (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")
            if p.is_file()
        )
        if folder.is_dir()
        else str(source)
    )
    identity = json.dumps([files, settings, seed, list(prompts)], default=str)
    return hashlib.sha256(identity.encode()).hexdigest()
