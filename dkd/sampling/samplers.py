"""Samplers: prompts and one seed per prompt in, PIL images out.

``DiffusersSampler`` runs a diffusers pipeline as a :class:`~dkd.sampling.specs.MultiStepSpec` says
(the teacher rows of latent backbones, published checkpoints), one generator per image;
``make_sampler`` picks the sampler of one evaluated model: an exported one-step student, a teacher
or a published checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from ..vocabulary import PUBLISHED_PREFIX, catalog_model, model_kind, published_name
from .specs import COMMUNITY_PIPELINE, MultiStepSpec, scheduler_class


class Sampler(Protocol):
    """Anything that turns prompts and one seed per prompt into PIL images."""

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16) -> list[Image.Image]: ...


def _denoiser_file(spec: MultiStepSpec) -> Path:
    """The local path of ``spec.denoiser_weights`` (downloaded from the hub when it is a repo id)."""
    from ..analysis.io import hub_file

    location, name = Path(spec.denoiser_weights).expanduser(), spec.denoiser_weight_name
    if location.is_file():
        return location
    if not name:
        raise ValueError(
            f"denoiser_weights {spec.denoiser_weights!r} is a folder or hub repo: "
            "denoiser_weight_name must name the file in it."
        )
    return hub_file(str(location) if location.is_dir() else spec.denoiser_weights, name)


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
    from ..analysis.io import load_state_dict

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
      ``dkd.sampling.pipeline.MultiStepPipeline`` for pixel-space ones (the toy);
    * ``"teacher-1step"``: the teacher at ``source`` used as a one-step generator (no training),
      the "teacher run in one step" row;
    * ``"pub-<name>"``: a published checkpoint of ``catalog`` as its model card samples it
      (:func:`published_spec`; ``source`` is not used);
    * ``"tnorm-<model>"``/``"tdir-<model>"`` (Fig. 2c): a run's swapped student at ``source`` like a run, or
      a published checkpoint sampled as its card says with its denoiser replaced by the swapped one in the
      folder ``source`` (the LoRA, if any, is already fused into it).
    """
    from ..backbones import backbone_spec, components_source
    from .pipeline import MultiStepPipeline, OneStepPipeline

    kind, published = model_kind(model), catalog_model(model)
    if kind == "published":
        return DiffusersSampler(published_spec(backbone, model, catalog), dtype=dtype, device=device)
    if published:  # a swapped published checkpoint: its card's sampling, the swapped denoiser
        swapped = dataclasses.replace(
            published_spec(backbone, published, catalog),
            denoiser_weights=str(Path(source, "diffusion_pytorch_model.safetensors")),
            denoiser_weight_name=None,
            adapter=None,
            adapter_weight_name=None,
            adapter_scale=1.0,
        )
        return DiffusersSampler(swapped, dtype=dtype, device=device)
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
