"""A loaded teacher (denoiser, text encoder, tokenizer, VAE, noise schedule) and one call
convention for both denoiser families."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .specs import BackboneSpec
from .text import PromptEmbeds, encode_prompts


def denoise(denoiser: nn.Module, family: str, x_t: torch.Tensor, t: torch.Tensor, embeds: PromptEmbeds) -> torch.Tensor:
    """The denoiser's prediction (eps or v) at ``x_t``, ``t`` for both families.

    PixArt-alpha predicts eps and a learned variance (8 channels for 4 latent channels): only
    the first ``in_channels`` channels (eps) are returned. ``t`` is one timestep per sample.
    """
    t = t.to(x_t.device).expand(x_t.shape[0]) if t.ndim == 0 else t.to(x_t.device)
    hidden = embeds.hidden_states.to(x_t.dtype)
    if family == "sd":
        return denoiser(x_t, t, encoder_hidden_states=hidden).sample
    out = denoiser(
        x_t,
        encoder_hidden_states=hidden,
        encoder_attention_mask=embeds.attention_mask,
        timestep=t,
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    ).sample
    return out[:, : x_t.shape[1]]


@dataclass
class Teacher:
    """Everything of one backbone that distillation and sampling need."""

    spec: BackboneSpec
    denoiser: nn.Module
    scheduler: object  # a diffusers DDPMScheduler: the training noise schedule
    text_encoder: nn.Module | None = None
    tokenizer: object | None = None
    vae: nn.Module | None = None

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def prediction_type(self) -> str:
        """ "epsilon" or "v_prediction", from the scheduler config shipped with the model."""
        return self.scheduler.config.prediction_type

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.scheduler.alphas_cumprod

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the denoiser's input."""
        size = self.denoiser.config.sample_size
        return self.denoiser.config.in_channels, size, size

    def encode(self, prompts: list[str]) -> PromptEmbeds:
        if self.text_encoder is None or self.tokenizer is None:
            raise RuntimeError(f"{self.spec.name} was loaded without its text encoder.")
        return encode_prompts(
            prompts,
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            max_length=self.spec.text_max_length,
            family=self.family,
        )

    def predict(
        self, x_t: torch.Tensor, t: torch.Tensor, embeds: PromptEmbeds, denoiser: nn.Module | None = None
    ) -> torch.Tensor:
        """``denoise`` with this teacher's denoiser, or with a student/fake copy of it."""
        return denoise(denoiser if denoiser is not None else self.denoiser, self.family, x_t, t, embeds)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in [-1, 1] through the VAE (with its scaling factor); a pixel-space
        backbone's samples are the images."""
        if not self.spec.latent:
            return latents.float().clamp(-1, 1)
        if self.vae is None:
            raise RuntimeError(f"{self.spec.name} was loaded without its VAE.")
        latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(latents).sample.clamp(-1, 1)
