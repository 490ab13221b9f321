"""The toy backbone: a small text-conditioned pixel-space U-Net on the 8x8 digits.

Same classes and module names as SD1.5 (``UNet2DConditionModel`` with cross-attention, a CLIP
text encoder, a real CLIP BPE tokenizer from open_clip's vocabulary, SD's noise schedule), so
the adapters, the trainer, the pipelines and the workflow run on it unchanged; only the VAE is
absent (``BackboneSpec.latent`` is False: the samples are the images).

The frozen text encoder is random, built from a fixed seed: it needs no download and is
rebuilt bit-identically from code, so only the trained U-Net needs to be stored. Its
fingerprint (:func:`text_encoder_digest`) is kept in the weights file's metadata, and
:func:`load_toy_unet` refuses weights trained with another encoder.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..backbones.folder import save_pipeline_folder
from ..backbones.tiny import CLIP_VOCAB_SIZE, SCHEDULER_CONFIG, write_clip_tokenizer

TEXT_LENGTH = 16  # tokens; "a scanned image of the digit seven" is 9
TEXT_SEED = 1234

TOY_UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": [16, 32],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 2,  # diffusers' legacy name: the number of heads
    "norm_num_groups": 8,
}

TOY_TEXT_CONFIG = dict(
    vocab_size=CLIP_VOCAB_SIZE,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)


def toy_unet(seed: int = 0) -> nn.Module:
    """The toy denoiser with fresh random weights (seeded)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel.from_config(TOY_UNET_CONFIG)


def toy_text_encoder() -> nn.Module:
    """The frozen random CLIP text encoder of the toy, identical on every machine (fixed seed)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TEXT_SEED)
        encoder = CLIPTextModel(CLIPTextConfig(**TOY_TEXT_CONFIG))
    finally:
        torch.random.set_rng_state(generator_state)
    return encoder.eval().requires_grad_(False)


def text_encoder_digest(encoder: nn.Module) -> str:
    """SHA-256 over the encoder's parameters (names, shapes, float32 bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def toy_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(SCHEDULER_CONFIG)


def save_toy_backbone(folder: str | Path, unet: nn.Module | None = None, *, seed: int = 0) -> Path:
    """Write the toy pipeline folder (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``;
    no ``vae/``), loadable by ``dkd.backbones.load_teacher("toy", folder)``. ``unet``: trained
    weights (default: a random one from ``seed``)."""
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = write_clip_tokenizer(scratch, max_length=TEXT_LENGTH)
        return save_pipeline_folder(
            folder,
            "sd",
            denoiser=unet if unet is not None else toy_unet(seed),
            text_encoder=toy_text_encoder(),
            tokenizer=tokenizer,
            vae=None,
            scheduler=toy_scheduler(),
        )


def load_toy_unet(weights: str | Path) -> nn.Module:
    """The toy U-Net with trained ``weights`` (safetensors). When the file's metadata names the text
    encoder it was trained with (``text_encoder_sha256``), the encoder rebuilt here must match."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(weights).is_file():
        raise FileNotFoundError(f"no toy teacher weights at {weights}; train them with the rule toy_teacher_weights.")
    with safe_open(str(weights), framework="pt") as handle:
        expected = (handle.metadata() or {}).get("text_encoder_sha256")
    if expected is not None:
        actual = text_encoder_digest(toy_text_encoder())
        if actual != expected:
            raise ValueError(
                f"the toy text encoder rebuilt here (sha256 {actual[:12]}) is not the one {weights} was trained "
                f"with ({expected[:12]}); retrain the toy teacher (rule toy_teacher_weights)."
            )
    unet = toy_unet()
    unet.load_state_dict(load_file(str(weights)))
    return unet
