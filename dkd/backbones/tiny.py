"""Tiny denoisers of each family, built from configs in code (tests, CI, smoke runs).

Same classes and module names as the real backbones (so the adapter presets apply
unchanged), 16k (PixArt) to 200k (U-Net) parameters: fast on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

TINY_UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [16, 32],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 16,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}

TINY_PIXART_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 8,
    "patch_size": 2,
    "num_layers": 2,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 16,
    "caption_channels": 24,
    "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "num_embeds_ada_norm": 1000,
    "use_additional_conditions": False,
}


def tiny_unet(device: str | torch.device = "cpu") -> nn.Module:
    """A tiny ``UNet2DConditionModel`` (SD layout: cross-attention, GEGLU, resnets)."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel.from_config(TINY_UNET_CONFIG)


def tiny_pixart(device: str | torch.device = "cpu") -> nn.Module:
    """A tiny ``PixArtTransformer2DModel`` (adaLN-single DiT with caption projection)."""
    from diffusers import PixArtTransformer2DModel

    with torch.device(device):
        return PixArtTransformer2DModel.from_config(TINY_PIXART_CONFIG)
