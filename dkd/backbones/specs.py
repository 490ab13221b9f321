"""What each backbone is (hub id, denoiser class and subfolder) and its shipped configs.

The diffusers configs of the three denoisers ship in ``config/backbones/<name>/`` so that
the architectures can be built without any download, e.g. on the ``meta`` device to count
parameters, or with random weights for benchmarks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """One teacher family: where it lives on the hub and how its denoiser is built."""

    name: str
    hub_id: str
    denoiser_subfolder: str
    denoiser_class: str  # a diffusers model class name

    def denoiser_config_path(self) -> Path:
        return config_dir() / "backbones" / self.name / self.denoiser_subfolder / "config.json"


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "unet", "UNet2DConditionModel"),
        BackboneSpec("sd21", "stabilityai/stable-diffusion-2-1-base", "unet", "UNet2DConditionModel"),
        BackboneSpec("pixart256", "PixArt-alpha/PixArt-XL-2-256x256", "transformer", "PixArtTransformer2DModel"),
    )
}


def config_dir() -> Path:
    """The repository's ``config/`` folder (``$DKD_CONFIG_DIR`` overrides it)."""
    path = Path(os.environ.get("DKD_CONFIG_DIR", Path(__file__).resolve().parents[2] / "config"))
    if not (path / "backbones").is_dir():
        raise FileNotFoundError(
            f"No backbone configs under {path}/backbones; set DKD_CONFIG_DIR to the repository's config/ folder."
        )
    return path


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of a backbone by name, with one clear error for an unknown name."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; expected one of {sorted(BACKBONES)}.") from None


def build_denoiser(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The denoiser of ``name`` from its shipped config, with random (or meta) weights."""
    import diffusers

    spec = backbone_spec(name)
    config = json.loads(spec.denoiser_config_path().read_text())
    model_cls = getattr(diffusers, spec.denoiser_class)
    with torch.device(device):
        return model_cls.from_config(config)
