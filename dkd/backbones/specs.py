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

FAMILIES = ("sd", "pixart")


@dataclass(frozen=True)
class BackboneSpec:
    """One teacher: where it lives, its family (SD U-Net or PixArt DiT) and its text length.

    ``hub_id`` is None for the tiny backbones and the toy, which exist only as local folders
    written by ``dkd.backbones.tiny.save_tiny_backbone`` / ``dkd.toy.backbone``; they load
    through the same code path. ``components_id``: the hub pipeline that supplies the scheduler,
    tokenizer, text encoder and VAE when the ``hub_id`` repo holds only the denoiser
    (``PixArt-alpha/PixArt-XL-2-256x256`` has only ``transformer/``; diffusers loads it into
    ``PixArt-XL-2-1024-MS``'s pipeline, huggingface/diffusers#6789).
    """

    name: str
    family: str  # "sd": U-Net + CLIP text encoder; "pixart": DiT + T5 text encoder
    hub_id: str | None
    text_max_length: int  # tokens of the text encoder (CLIP 77, PixArt's T5 120)
    resolution: int  # image size in pixels
    latent: bool = True  # False: the denoiser works on pixels (the toy), there is no VAE
    components_id: str | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}; got {self.family!r}.")

    @property
    def denoiser_subfolder(self) -> str:
        return "unet" if self.family == "sd" else "transformer"

    @property
    def denoiser_class(self) -> str:
        """The diffusers model class of the denoiser."""
        return "UNet2DConditionModel" if self.family == "sd" else "PixArtTransformer2DModel"

    def denoiser_config_path(self) -> Path:
        return config_dir() / "backbones" / self.name / self.denoiser_subfolder / "config.json"


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("sd15", "sd", "stable-diffusion-v1-5/stable-diffusion-v1-5", 77, 512),
        BackboneSpec("sd21", "sd", "stabilityai/stable-diffusion-2-1-base", 77, 512),
        BackboneSpec(
            "pixart256",
            "pixart",
            "PixArt-alpha/PixArt-XL-2-256x256",
            120,
            256,
            components_id="PixArt-alpha/PixArt-XL-2-1024-MS",
        ),
        BackboneSpec("tiny-sd", "sd", None, 77, 16),
        BackboneSpec("tiny-pixart", "pixart", None, 120, 16),
        BackboneSpec("toy", "sd", None, 16, 8, latent=False),  # pixel-space digits (dkd.toy)
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


def built_config(name: str) -> dict | None:
    """The in-code denoiser config of a backbone the workflow builds (tiny ones, the toy), else None."""
    if name in ("tiny-sd", "tiny-pixart"):
        from .tiny import TINY_PIXART_CONFIG, TINY_UNET_CONFIG

        return TINY_UNET_CONFIG if name == "tiny-sd" else TINY_PIXART_CONFIG
    if name == "toy":
        from ..toy.backbone import TOY_UNET_CONFIG

        return TOY_UNET_CONFIG
    return None


def build_denoiser(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The denoiser of ``name`` from its shipped config, with random (or meta) weights."""
    import diffusers

    spec = backbone_spec(name)
    config = built_config(name) or json.loads(spec.denoiser_config_path().read_text())
    model_cls = getattr(diffusers, spec.denoiser_class)
    with torch.device(device):
        return model_cls.from_config(config)
