"""Tiny backbones of each family, built from configs in code (tests, CI, smoke runs).

Same classes and module names as the real backbones (so the adapter presets apply
unchanged), 16k (PixArt) to 200k (U-Net) denoiser parameters: fast on a CPU.
``save_tiny_backbone`` writes a complete diffusers pipeline folder (denoiser, text encoder,
tokenizer, VAE, scheduler), which then loads through exactly the code path of the real
teachers (``dkd.backbones.load_teacher``). The tokenizer is a real CLIP BPE tokenizer, built
from the vocabulary that open_clip ships, so nothing is downloaded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from torch import nn

from .folder import save_pipeline_folder

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

TINY_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 16,
}

# The noise schedule of SD1.5/2.1 and PixArt-alpha (scaled-linear betas, 1000 steps).
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

CLIP_VOCAB_SIZE = 49408


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


def write_clip_tokenizer(folder: str | Path, max_length: int = 77):
    """A real CLIP BPE tokenizer (transformers' ``CLIPTokenizer``) from open_clip's vocabulary.

    open_clip ships ``bpe_simple_vocab_16e6.txt.gz``, the merges of OpenAI's CLIP, and builds
    the vocabulary from it; written as ``vocab.json``/``merges.txt`` (with transformers' names
    for the two special tokens) it is the tokenizer of ``openai/clip-vit-large-patch14``.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): i for token, i in bpe.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda item: item[1])]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _tiny_text_encoder(family: str) -> nn.Module:
    if family == "sd":
        from transformers import CLIPTextConfig, CLIPTextModel

        return CLIPTextModel(
            CLIPTextConfig(
                vocab_size=CLIP_VOCAB_SIZE,
                hidden_size=TINY_UNET_CONFIG["cross_attention_dim"],
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=77,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
            )
        )
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=CLIP_VOCAB_SIZE,
            d_model=TINY_PIXART_CONFIG["caption_channels"],
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_heads=2,
            pad_token_id=49407,
            eos_token_id=49407,
            decoder_start_token_id=49407,
        )
    )


def save_tiny_backbone(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny diffusers pipeline folder of ``family`` ("sd" or "pixart"), random weights.

    The layout is the hub's (``model_index.json``, ``unet/`` or ``transformer/``,
    ``text_encoder/``, ``tokenizer/``, ``vae/``, ``scheduler/``), so that the same loading code
    serves the tiny and the real teachers.
    """
    from diffusers import AutoencoderKL, DDPMScheduler

    if family not in ("sd", "pixart"):
        raise ValueError(f"family must be 'sd' or 'pixart'; got {family!r}.")
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:  # the vocabulary files, read back by the tokenizer
        tokenizer = write_clip_tokenizer(scratch, max_length=77 if family == "sd" else 120)
        return save_pipeline_folder(
            folder,
            family,
            denoiser=tiny_unet() if family == "sd" else tiny_pixart(),
            text_encoder=_tiny_text_encoder(family),
            tokenizer=tokenizer,
            vae=AutoencoderKL.from_config(TINY_VAE_CONFIG),
            scheduler=DDPMScheduler.from_config(SCHEDULER_CONFIG),
        )
