"""The multi-step teacher with ScaleCrafter (He et al., 2023): the reference the one-step student is shown
against at 1024² and 2048² (paper 4.3, Fig. 14/25; SD1.5 with DDIM 50).

ScaleCrafter samples the teacher with DDIM and classifier-free guidance (CFG) at the high resolution and
re-dilates the U-Net (:func:`dkd.downstream.scalecrafter.redilation.redilated`, the layers and factors of
:func:`~dkd.downstream.scalecrafter.redilation.scalecrafter_factors`) only in the early, high-noise steps. Its SD1.5
settings (``configs/sd1.5_<H>x<W>.yaml`` of its repository, for 50 DDIM steps, CFG 7.5):

* ``dilate_tau``: steps ``i < dilate_tau`` run re-dilated, the rest plain (30 at 1024², 35 at 2048²);
* ``progressive`` (2048²): in step ``i < tau`` a factor ``f >= 2`` becomes
  ``max(ceil(f (tau - i) / tau), 2)``, from ``f`` at ``i = 0`` down towards 2 (:func:`step_factors`);
* noise-damped CFG, ``ndcfg_tau`` (35 at 2048², 0 at 1024²): in steps ``i < ndcfg_tau`` the guided
  prediction is ``eps_base + w (eps_cond - eps_uncond)``, where ``eps_cond``/``eps_uncond`` come from
  the re-dilated pass and ``eps_base`` from a second pass on the unconditional input whose shallowest
  re-dilated level keeps its plain convs (``scalecrafter_factors(..., min_depth=2)``, with the same
  progressive rule over ``ndcfg_tau``). Only the unconditional half of that pass is used, so only it is
  computed (each sample of a batch is independent in the U-Net);
* DDIM's ``eta``: ScaleCrafter's pipeline call defaults to 1.0 (stochastic DDIM); diffusers' to 0.0.
  The step noise of each image comes from its own CPU generator, seeded with its seed, that first drew
  its starting noise (the student's noise for that seed): an image does not depend on its batch.

FreeU (:func:`~dkd.downstream.scalecrafter.redilation.freeu`) is on for the whole loop when the spec says so.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ...sampling.pipeline import MultiStepPipeline
from .redilation import HighResSpec, freeu, high_res_geometry, redilated, scalecrafter_factors


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class ReDilationSchedule:
    """When ScaleCrafter re-dilates the teacher (see the module docstring): ``dilate_tau`` and
    ``ndcfg_tau`` steps (0: never), ``progressive`` factor decay."""

    dilate_tau: int
    ndcfg_tau: int = 0
    progressive: bool = False

    def __post_init__(self):
        if not _count(self.dilate_tau) or not _count(self.ndcfg_tau):
            raise ValueError(f"dilate_tau and ndcfg_tau must be ints >= 0; got {self.dilate_tau!r}, {self.ndcfg_tau!r}")
        if not isinstance(self.progressive, bool):
            raise ValueError(f"progressive must be a bool; got {self.progressive!r}.")

    def check(self, steps: int) -> None:
        """Refuse a tau beyond the number of sampling steps (a schedule meant for another step count)."""
        if max(self.dilate_tau, self.ndcfg_tau) > steps:
            raise ValueError(f"dilate_tau {self.dilate_tau} / ndcfg_tau {self.ndcfg_tau} exceed the {steps} steps.")


def step_factors(factors: Mapping[str, float], step: int, tau: int, progressive: bool) -> dict[str, float]:
    """The re-dilation of sampling step ``step`` (0-based): ``{}`` from ``tau`` on; before, ``factors``,
    with a factor ``f >= 2`` lowered to ``max(ceil(f (tau - step) / tau), 2)`` if ``progressive``
    (ScaleCrafter's rule; factors below 2 are kept as they are)."""
    if not _count(step) or not _count(tau):
        raise ValueError(f"step and tau must be ints >= 0; got {step!r}, {tau!r}.")
    if step >= tau:
        return {}
    if not progressive:
        return dict(factors)
    return {n: float(max(math.ceil(f * (tau - step) / tau), 2)) if f >= 2 else f for n, f in factors.items()}


class ScaleCrafterTeacher(MultiStepPipeline):
    """The teacher at ``spec``'s resolution in ``steps`` steps of a diffusers scheduler (DDIM) with CFG
    (empty prompt as uncond), re-dilated as ``schedule`` says when ``spec.redilate``; a
    ``(prompts, seeds) -> PIL images`` sampler like :class:`~dkd.sampling.pipeline.MultiStepPipeline`."""

    def __init__(
        self,
        teacher,
        spec: HighResSpec,
        schedule: ReDilationSchedule,
        *,
        steps: int = 50,
        guidance_scale: float = 7.5,
        eta: float = 0.0,
        scheduler: str = "DDIMScheduler",
    ):
        super().__init__(teacher, steps=steps, guidance_scale=guidance_scale, scheduler=scheduler)
        if not isinstance(spec, HighResSpec) or not isinstance(schedule, ReDilationSchedule):
            raise ValueError("spec must be a HighResSpec and schedule a ReDilationSchedule.")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"eta must be a number in [0, 1]; got {eta!r}.")
        if eta > 0 and "eta" not in self._step_parameters():
            raise ValueError(f"{scheduler} has no eta (stochastic steps are DDIM's).")
        schedule.check(steps)
        if schedule.ndcfg_tau and guidance_scale == 1.0:
            raise ValueError("noise-damped CFG (ndcfg_tau > 0) needs guidance (guidance_scale != 1).")
        unet = teacher.denoiser
        self.shape, scale = high_res_geometry(teacher, spec)
        self.spec, self.schedule, self.eta = spec, schedule, float(eta)
        self.factors = scalecrafter_factors(unet, scale) if spec.redilate else {}
        self.ndcfg_factors = scalecrafter_factors(unet, scale, min_depth=2) if spec.redilate else {}

    def _step_parameters(self):
        return inspect.signature(self.scheduler.step).parameters

    @property
    def unet_rows_per_image(self) -> int:
        """U-Net evaluations per image: 2 per step with CFG (1 without), plus 1 per noise-damped step."""
        guided = self.guidance_scale != 1.0
        return self.steps * (2 if guided else 1) + (min(self.schedule.ndcfg_tau, self.steps) if guided else 0)

    @torch.no_grad()
    def latents(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        self.check(prompts, seeds)
        teacher, scheduler, schedule, unet = self.teacher, self.scheduler, self.schedule, self.teacher.denoiser
        device, dtype = next(unet.parameters()).device, unet.dtype
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        x = torch.stack([torch.randn(self.shape, generator=g) for g in generators]).to(device)
        cond = teacher.encode(list(prompts))
        guided = self.guidance_scale != 1.0
        uncond = teacher.encode([""]).repeat(len(prompts)) if guided else None
        embeds = cond.cat([cond, uncond]) if guided else cond
        scheduler.set_timesteps(self.steps, device=device)
        x = x * scheduler.init_noise_sigma
        extra = {"eta": self.eta} if "eta" in self._step_parameters() else {}
        with freeu(unet, self.spec.freeu, **(self.spec.freeu_factors or {})):
            for i, t in enumerate(scheduler.timesteps):
                x_in = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t).to(dtype)
                with redilated(unet, step_factors(self.factors, i, schedule.dilate_tau, schedule.progressive)):
                    out = teacher.predict(x_in, t, embeds).float()
                if guided:
                    c, u = out.chunk(2)
                    base = u
                    if i < schedule.ndcfg_tau:
                        damped = step_factors(self.ndcfg_factors, i, schedule.ndcfg_tau, schedule.progressive)
                        with redilated(unet, damped):
                            base = teacher.predict(x_in.chunk(2)[1], t, uncond).float()
                    out = base + self.guidance_scale * (c - u)
                if self.eta > 0:
                    noise = torch.stack([torch.randn(self.shape, generator=g) for g in generators])
                    extra["variance_noise"] = noise.to(device)
                x = scheduler.step(out, t, x, **extra).prev_sample
        return x
