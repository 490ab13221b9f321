"""One DKD iteration (Algorithm 1, lines 4-11): the generator's VSD loss, then the fake model's.

The three networks: the real model (the frozen teacher), the one-step generator G (student:
the teacher with a LoRaD/LoRA/DoRA adapter, or a fully trained copy) and the fake model
(likewise, trained with the denoising loss on G's detached samples). Only tensors and modules
here; optimisation, checkpoints and logging live in the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import PromptEmbeds, Teacher
from .losses import WEIGHTINGS, cfg, fake_denoising_loss, vsd_generator_loss
from .schedule import add_noise, denoising_target, one_step_x0, pred_x0, sample_timesteps, timestep_range


def require_numbers(**values) -> None:
    """One clear error for a setting that must be a number (or a tuple of numbers) and is not; YAML 1.1
    reads ``1e-4``, without a dot, as text."""
    for name, value in values.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
            hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if any(isinstance(v, str) for v in items) else ""
            raise ValueError(f"{name} must be a number; got {value!r}{hint}.")


@dataclass(frozen=True)
class VSDConfig:
    """Settings of the VSD objective (paper 4.1, F.1; ``docs/reference.md`` section 2).

    ``t_range`` is the generator loss's ``t ~ U(0.02 T, 0.98 T)`` (Algorithm 1, line 6);
    ``fake_t_range`` the fake model's (line 9; DMD2 uses the full ``(0.0, 1.0)``).
    ``guidance_scale`` is the real model's CFG (1.5); the fake model runs without CFG.
    """

    guidance_scale: float = 1.5
    weighting: str = "dmd"
    t_init: int = 999
    t_range: tuple[float, float] = (0.02, 0.98)
    fake_t_range: tuple[float, float] = (0.02, 0.98)

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {self.weighting!r}.")
        require_numbers(guidance_scale=self.guidance_scale)
        if not self.guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0; got {self.guidance_scale!r}.")
        if isinstance(self.t_init, bool) or not isinstance(self.t_init, int) or self.t_init < 0:
            raise ValueError(f"t_init must be a non-negative integer timestep; got {self.t_init!r}.")
        for name in ("t_range", "fake_t_range"):
            low_high = tuple(getattr(self, name))
            if len(low_high) != 2:
                raise ValueError(f"{name} must be (low_frac, high_frac); got {low_high!r}.")
            require_numbers(**{name: low_high})
            timestep_range(*low_high, num_train_timesteps=1000)
            object.__setattr__(self, name, low_high)


def generate(teacher: Teacher, student: nn.Module, noise: torch.Tensor, embeds: PromptEmbeds, t_init: int = 999):
    """G(z, c): the student called once on pure noise at ``t_init``; returns x0 (with its graph)."""
    t = torch.full((noise.shape[0],), t_init, device=noise.device, dtype=torch.long)
    out = teacher.predict(noise, t, embeds, denoiser=student)
    # x0 in float32 at least (as DMD2 keeps it) even when the U-Net runs under bf16/fp16 autocast
    dtype = torch.promote_types(out.dtype, torch.float32)
    return one_step_x0(noise, out, t_init, teacher.alphas_cumprod, teacher.prediction_type, dtype=dtype)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def generator_loss(
    teacher: Teacher,
    fake: nn.Module,
    x0: torch.Tensor,
    embeds: PromptEmbeds,
    uncond: PromptEmbeds,
    config: VSDConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 11: noise G's sample to ``x_t``, score it with the real model (CFG) and the fake
    model (no CFG), and return the VSD loss whose gradient w.r.t. ``x0`` is the weighted
    score difference (``dkd.train.losses.vsd_generator_loss``)."""
    abar, kind = teacher.alphas_cumprod, teacher.prediction_type
    t = sample_timesteps(
        x0.shape[0], *config.t_range, num_train_timesteps=abar.shape[0], generator=generator, device=x0.device
    )
    x_t = add_noise(x0.detach(), _randn_like(x0, generator), t, abar)
    with torch.no_grad():
        both = teacher.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), PromptEmbeds.cat([embeds, uncond]))
        # CFG combined in float32 at least: in bf16 its rounding would match the network's own
        cond_out, uncond_out = both.to(torch.promote_types(both.dtype, torch.float32)).chunk(2)
        real = cfg(uncond_out, cond_out, config.guidance_scale)
        fake_out = teacher.predict(x_t, t, embeds, denoiser=fake)
        x0_real = pred_x0(x_t, real, t, abar, kind, dtype=torch.float64)
        x0_fake = pred_x0(x_t, fake_out, t, abar, kind, dtype=torch.float64)
    loss, logs = vsd_generator_loss(x0, x0_real, x0_fake, t, abar, weighting=config.weighting)
    logs["t_mean"] = t.float().mean()
    return loss, logs


def fake_loss(
    teacher: Teacher,
    fake: nn.Module,
    x0: torch.Tensor,
    embeds: PromptEmbeds,
    config: VSDConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 12: the fake model's denoising loss on G's detached sample (Algorithm 1, lines 9-11)."""
    x0 = x0.detach()
    abar = teacher.alphas_cumprod
    t = sample_timesteps(
        x0.shape[0], *config.fake_t_range, num_train_timesteps=abar.shape[0], generator=generator, device=x0.device
    )
    noise = _randn_like(x0, generator)
    out = teacher.predict(add_noise(x0, noise, t, abar), t, embeds, denoiser=fake)
    return fake_denoising_loss(out, denoising_target(x0, noise, t, abar, teacher.prediction_type))
