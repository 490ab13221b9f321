"""Write a diffusers pipeline folder (the hub's layout) from loaded parts."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

PIPELINE_CLASS = {"sd": "StableDiffusionPipeline", "pixart": "PixArtAlphaPipeline"}


def save_pipeline_folder(
    folder: str | Path,
    family: str,
    *,
    denoiser: nn.Module,
    text_encoder: nn.Module,
    tokenizer,
    vae: nn.Module | None,
    scheduler,
) -> Path:
    """``model_index.json`` plus ``unet/`` (or ``transformer/``), ``text_encoder/``, ``tokenizer/``,
    ``vae/`` and ``scheduler/``: loadable by ``dkd.backbones.load_teacher`` and, for SD, by
    diffusers' ``StableDiffusionPipeline.from_pretrained``. ``vae=None`` (a pixel-space model) leaves
    ``vae/`` out."""
    if family not in PIPELINE_CLASS:
        raise ValueError(f"family must be one of {sorted(PIPELINE_CLASS)}; got {family!r}.")
    folder = Path(folder)
    parts = {
        "unet" if family == "sd" else "transformer": denoiser,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "vae": vae,
        "scheduler": scheduler,
    }
    index = {"_class_name": PIPELINE_CLASS[family]}
    for name, part in parts.items():
        if part is None:
            continue
        part.save_pretrained(folder / name)
        library = "transformers" if name in ("text_encoder", "tokenizer") else "diffusers"
        index[name] = [library, type(part).__name__]
    if family == "sd":
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
