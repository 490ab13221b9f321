"""One distillation iteration's two losses, composed from the objective's hooks (``dkd.train.objective``).

The three networks: the real model (the frozen teacher), the one-step generator G (student:
the teacher with a LoRaD/LoRA/DoRA adapter, or a fully trained copy) and the fake model
(likewise, trained with the denoising loss on G's detached samples). Only tensors and modules
here; the order of the updates, optimisation, checkpoints and logging live in the training loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import PromptEmbeds, Teacher
from .losses import cfg, clamped_score_loss, fake_denoising_loss, sid_generator_loss, vsd_generator_loss
from .objective import ObjectiveConfig, drop_prompts
from .schedule import add_noise, alpha_sigma, denoising_target, one_step_x0, pred_x0, sample_timesteps


def generator_input(noise: torch.Tensor, t_init: int, scaled_input: bool, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """What G sees at ``t_init``: the noise itself, or ``sigma_{t_init}`` times it (``scaled_input``:
    SiD-LSG's DDPM noising of ``x0 = 0``)."""
    if not scaled_input:
        return noise
    _, sigma = alpha_sigma(t_init, alphas_cumprod, noise)
    return (sigma * noise.double()).to(noise.dtype)


def generate(
    teacher: Teacher,
    student: nn.Module,
    noise: torch.Tensor,
    embeds: PromptEmbeds,
    t_init: int = 999,
    scaled_input: bool = False,
):
    """G(z, c): the student called once on its input (:func:`generator_input`) at ``t_init``;
    returns x0 (with its graph)."""
    x_in = generator_input(noise, t_init, scaled_input, teacher.alphas_cumprod)
    t = torch.full((noise.shape[0],), t_init, device=noise.device, dtype=torch.long)
    out = teacher.predict(x_in, t, embeds, denoiser=student)
    # x0 in float32 at least (as DMD2 keeps it) even when the U-Net runs under bf16/fp16 autocast
    dtype = torch.promote_types(out.dtype, torch.float32)
    return one_step_x0(x_in, out, t_init, teacher.alphas_cumprod, teacher.prediction_type, dtype=dtype)


@contextlib.contextmanager
def frozen(model: nn.Module):
    """``model``'s trainable parameters with ``requires_grad`` off inside (a loss backpropagated through
    the fake model into the generator must leave the fake's gradients alone; the backward pass, and
    a gradient-checkpointed model's recomputation, must run inside too), restored on exit."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for param in params:
            param.requires_grad_(False)
        yield model
    finally:
        for param in params:
            param.requires_grad_(True)


def _guided(teacher: Teacher, x_t, t, embeds: PromptEmbeds, uncond: PromptEmbeds, scale, denoiser=None):
    """A model's output at ``x_t`` with CFG ``scale`` (one batched call for cond and uncond), in float32
    at least (in bf16 the combination's rounding would match the network's own); one call without CFG
    when ``scale`` is the constant 1."""
    if isinstance(scale, (int, float)) and scale == 1:
        out = teacher.predict(x_t, t, embeds, denoiser=denoiser)
        return out.to(torch.promote_types(out.dtype, torch.float32))
    both = teacher.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), PromptEmbeds.cat([embeds, uncond]), denoiser)
    cond_out, uncond_out = both.to(torch.promote_types(both.dtype, torch.float32)).chunk(2)
    return cfg(uncond_out, cond_out, scale)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def generator_loss(
    teacher: Teacher,
    fake: nn.Module,
    x0: torch.Tensor,
    embeds: PromptEmbeds,
    uncond: PromptEmbeds,
    objective: ObjectiveConfig,
    generator: torch.Generator | None = None,
    *,
    scorer: nn.Module | None = None,
    prompts: Sequence[str] | None = None,
    clip_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 11 and its baselines' forms: noise G's sample to ``x_t``, score it with the real model and the
    fake model, each with its guidance, and return the generator loss the objective names: the VSD
    loss whose gradient w.r.t. ``x0`` is the weighted score difference (``"dmd"``, ``"sds"``:
    ``dkd.train.losses.vsd_generator_loss``), or SiD's, backpropagated through both models
    (``"sid"``; ``fake`` must then be the unwrapped module, its parameters :func:`frozen` by the caller
    until the backward pass is done, so that the fake's gradients stay its own loss's). With a
    ``scorer``, plus ``clip_weight`` times the clamped score loss of ``scorer(x0, prompts)``
    (``dkd.train.losses.clamped_score_loss``; SwiftBrush v2, PG-SB)."""
    abar, kind = teacher.alphas_cumprod, teacher.prediction_type
    t = sample_timesteps(
        x0.shape[0], *objective.t_range, num_train_timesteps=abar.shape[0], generator=generator, device=x0.device
    )
    real_scale, fake_scale = objective.guidance(generator, x0.device)
    noise = _randn_like(x0, generator)
    keep = objective.keeps_graph
    x_t = add_noise(x0 if keep else x0.detach(), noise, t, abar)
    with contextlib.nullcontext() if keep else torch.no_grad():
        real = _guided(teacher, x_t, t, embeds, uncond, real_scale)
        fake_out = _guided(teacher, x_t, t, embeds, uncond, fake_scale, denoiser=fake)
        dtype = torch.promote_types(x0.dtype, torch.float32) if keep else torch.float64
        x0_real = pred_x0(x_t, real, t, abar, kind, dtype=dtype)
        x0_fake = pred_x0(x_t, fake_out, t, abar, kind, dtype=dtype)
        if keep:
            loss, logs = sid_generator_loss(x0, x0_real, x0_fake, alpha=objective.sid_alpha)
    if not keep:
        weighting = objective.generator_loss
        loss, logs = vsd_generator_loss(x0, x0_real, x0_fake, t, abar, weighting=weighting)
    if scorer is not None or clip_weight > 0:  # scored (and logged) at every step, the last one's weight 0 too
        if scorer is None or prompts is None:
            raise ValueError(f"objective {objective.name!r} with clip_weight > 0 needs a scorer and the prompts.")
        aux, aux_logs = clamped_score_loss(scorer(x0, prompts), objective.clip_margin)
        loss = loss + clip_weight * aux
        logs.update(aux_logs, clip_weight=torch.tensor(float(clip_weight)))
    logs["t_mean"] = t.float().mean()
    if objective.guidance_range is not None:
        logs["guidance"] = torch.as_tensor(real_scale).detach()
    return loss, logs


def fake_loss(
    teacher: Teacher,
    fake: nn.Module,
    x0: torch.Tensor,
    embeds: PromptEmbeds,
    uncond: PromptEmbeds,
    objective: ObjectiveConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 12 and its baselines' forms: the fake model's denoising loss on G's detached sample
    (Algorithm 1, lines 9-11), with the objective's null-prompt dropout, CFG on the fake's output
    (SiD's kappa_1, through both branches) and weighting over ``t``."""
    x0 = x0.detach()
    abar = teacher.alphas_cumprod
    t = sample_timesteps(
        x0.shape[0], *objective.fake_t_range, num_train_timesteps=abar.shape[0], generator=generator, device=x0.device
    )
    noise = _randn_like(x0, generator)
    embeds, dropped = drop_prompts(
        embeds, uncond, objective.null_prompt_p, objective.null_prompt_per, generator=generator
    )
    x_t = add_noise(x0, noise, t, abar)
    out = _guided(teacher, x_t, t, embeds, uncond, objective.fake_train_guidance_scale, denoiser=fake)
    weight = None
    if objective.fake_weighting == "alpha_bar":
        alpha, _ = alpha_sigma(t, abar, x0)
        weight = alpha.square()
    loss, logs = fake_denoising_loss(out, denoising_target(x0, noise, t, abar, teacher.prediction_type), weight)
    if objective.null_prompt_p:
        logs["null_prompts"] = dropped.float().mean()
    return loss, logs
