"""Load a teacher from a hub id or a local diffusers folder (``HF_HUB_OFFLINE=1`` friendly)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .specs import backbone_spec
from .teacher import Teacher


class BackboneNotFoundError(FileNotFoundError):
    """A teacher's folder or hub id could not be loaded."""


def _is_path_like(source: str) -> bool:
    """Anything but a hub id of the form ``owner/name``."""
    return source.startswith((".", "/", "~")) or source.count("/") != 1


def resolve_source(name: str, source: str | None) -> tuple[str, bool]:
    """``(source, local)``: a local folder, or a hub id (the backbone's default when None).

    A path that does not exist is an error here, not a hub look-up.
    """
    spec = backbone_spec(name)
    if source is None:
        if spec.hub_id is None:
            raise BackboneNotFoundError(
                f"Backbone {name!r} has no hub id: give the folder written by "
                f"dkd.backbones.tiny.save_tiny_backbone({spec.family!r}, folder)."
            )
        source = spec.hub_id
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists() or _is_path_like(source):
        raise BackboneNotFoundError(f"No diffusers folder for {name!r} at {source!r}.")
    return source, False


def components_source(name: str, source: str) -> str | None:
    """The hub pipeline whose scheduler, tokenizer, text encoder and VAE go with the denoiser at
    ``source`` when that is the backbone's own hub repo and it holds only the denoiser (PixArt-α
    256: ``BackboneSpec.components_id``); None when ``source`` is a complete pipeline."""
    spec = backbone_spec(name)
    return spec.components_id if spec.components_id and source == spec.hub_id else None


def _load(cls, source: str, subfolder: str, local: bool, what: str, name: str, **kwargs):
    try:
        return cls.from_pretrained(source, subfolder=subfolder, local_files_only=local, **kwargs)
    except (OSError, ValueError) as err:
        offline = (
            " (HF_HUB_OFFLINE=1: only local folders and the hub cache are used)"
            if os.environ.get("HF_HUB_OFFLINE") == "1"
            else ""
        )
        where = f"folder {source!r}" if local else f"hub id {source!r}{offline}"
        raise BackboneNotFoundError(
            f"Cannot load the {what} of {name!r} from {where}: expected a diffusers layout with "
            f"'{subfolder}/' ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None


def load_denoiser(name: str, source: str | None = None, *, dtype: torch.dtype = torch.float32):
    """Only the denoiser of backbone ``name`` from ``source`` (a diffusers folder or hub id; default: the
    backbone's hub id), in ``dtype`` on the CPU: e.g. another model of the same architecture whose
    weights start a student (SwiftBrush v2: SD-Turbo's U-Net for SD2.1)."""
    import diffusers

    spec = backbone_spec(name)
    source, local = resolve_source(name, source)
    cls = getattr(diffusers, spec.denoiser_class)
    return _load(
        cls, subfolder=spec.denoiser_subfolder, what="denoiser", dtype=dtype, source=source, local=local, name=name
    )


def load_teacher(
    name: str,
    source: str | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    text: bool = True,
    vae: bool = True,
) -> Teacher:
    """Load backbone ``name`` from ``source`` (a local diffusers folder or hub id; default: the
    backbone's hub id), in ``dtype`` on ``device``, with its text encoder and VAE if asked
    (a pixel-space backbone, ``spec.latent`` False, has no VAE). A hub repo that holds only the
    denoiser gets the other parts from :func:`components_source`."""
    import transformers
    from diffusers import AutoencoderKL, DDPMScheduler

    spec = backbone_spec(name)
    source, local = resolve_source(name, source)
    denoiser = load_denoiser(name, source, dtype=dtype)
    parts = components_source(name, source)
    common = dict(source=parts or source, local=local and parts is None, name=name)
    # The training noise schedule: DDPM betas of the shipped scheduler config (PixArt ships a
    # DPM-Solver config with the same betas).
    scheduler = _load(DDPMScheduler, subfolder="scheduler", what="scheduler", **common)
    teacher = Teacher(spec=spec, denoiser=denoiser.to(device).eval().requires_grad_(False), scheduler=scheduler)
    if text:
        encoder_cls = transformers.CLIPTextModel if spec.family == "sd" else transformers.T5EncoderModel
        teacher.tokenizer = _load(transformers.AutoTokenizer, subfolder="tokenizer", what="tokenizer", **common)
        encoder = _load(encoder_cls, subfolder="text_encoder", what="text encoder", dtype=dtype, **common)
        teacher.text_encoder = encoder.to(device).eval().requires_grad_(False)
    if vae and spec.latent:
        autoencoder = _load(AutoencoderKL, subfolder="vae", what="VAE", dtype=dtype, **common)
        teacher.vae = autoencoder.to(device).eval().requires_grad_(False)
    return teacher
