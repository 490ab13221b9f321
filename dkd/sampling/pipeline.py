"""Sampling on the training ``Teacher``: the one-step student (``OneStepPipeline``) and a multi-step
teacher (``MultiStepPipeline``), batched, one seed per image.

Each image's starting noise comes from its own CPU generator seeded with its seed, so an image
does not depend on the batch it is generated in, nor on the device: any shard of an evaluation
set can be regenerated alone (``docs/reference.md`` section 3).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..backbones import Teacher, load_teacher
from ..train.step import generate

STUDENT_INFO = "dkd_student.json"  # written beside the pipeline by dkd.train.export: backbone, generator input, method


def seeded_noise(seeds: Sequence[int], shape: tuple[int, ...], device="cpu", dtype=torch.float32) -> torch.Tensor:
    """One standard-normal tensor of ``shape`` per seed, stacked (drawn on the CPU)."""
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Images in [-1, 1], ``(B, 3, H, W)`` or ``(B, 1, H, W)``, to 8-bit RGB or grey PIL images."""
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if array.shape[-1] == 1:
        array = array[..., 0]
    return [Image.fromarray(np.ascontiguousarray(a)) for a in array]


class _Sampler:
    """Batched text to image: ``latents(prompts, seeds)`` of a subclass, decoded by the teacher."""

    teacher: Teacher

    def latents(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def check(prompts: Sequence[str], seeds: Sequence[int]) -> None:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds.")

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16) -> list[Image.Image]:
        """One PIL image per (prompt, seed), generated ``batch_size`` at a time."""
        images = []
        for start in range(0, len(prompts), batch_size):
            latents = self.latents(prompts[start : start + batch_size], seeds[start : start + batch_size])
            images += to_pil(self.teacher.decode(latents))
        return images


def student_info(folder: str | Path) -> dict:
    """The ``dkd_student.json`` of an exported student pipeline (backbone, generator input, objective,
    method), or ``{}`` for a pipeline folder without one."""
    path = Path(folder) / STUDENT_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


class OneStepPipeline(_Sampler):
    """Text to image in one network call of the distilled student, then the VAE decoder."""

    def __init__(self, teacher: Teacher, t_init: int = 999, scaled_input: bool = False):
        self.teacher, self.t_init, self.scaled_input = teacher, t_init, scaled_input

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, dtype: torch.dtype = torch.float32, device="cpu", backbone: str | None = None
    ) -> OneStepPipeline:
        """Load ``folder`` (an exported ``pipeline/``); ``backbone`` and the generator's input
        (``t_init``, ``scaled_input``: SiD-LSG's students see ``sigma_625 z`` at t = 625) are read from
        its ``dkd_student.json`` unless ``backbone`` is given."""
        info = student_info(folder)
        name = backbone or info.get("backbone")
        if name is None:
            raise ValueError(f"{folder} has no {STUDENT_INFO}: pass backbone= (e.g. 'sd15').")
        teacher = load_teacher(name, str(folder), dtype=dtype, device=device)
        return cls(teacher, t_init=info.get("t_init", 999), scaled_input=info.get("scaled_input", False))

    @torch.no_grad()
    def latents(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        self.check(prompts, seeds)
        teacher = self.teacher
        device = next(teacher.denoiser.parameters()).device
        noise = seeded_noise(seeds, teacher.latent_shape, device=device, dtype=teacher.denoiser.dtype)
        embeds = teacher.encode(list(prompts))
        return generate(teacher, teacher.denoiser, noise, embeds, self.t_init, self.scaled_input)


class MultiStepPipeline(_Sampler):
    """A teacher sampled in ``steps`` steps of a diffusers scheduler with classifier-free guidance
    (empty prompt as uncond), on the same ``Teacher`` as training: latent (through the VAE) and
    pixel-space backbones alike. The rows of the toy's teacher; for SD and PixArt the diffusers
    pipelines (``dkd.sampling.samplers.DiffusersSampler``) are the reference."""

    def __init__(
        self,
        teacher: Teacher,
        *,
        steps: int = 25,
        guidance_scale: float = 3.0,
        scheduler: str = "DDIMScheduler",
        scheduler_kwargs: dict | None = None,
    ):
        import diffusers

        if steps <= 0 or guidance_scale < 0:
            raise ValueError(f"steps must be > 0 and guidance_scale >= 0; got {steps}, {guidance_scale}.")
        try:
            scheduler_cls = getattr(diffusers, scheduler)
        except AttributeError:
            raise ValueError(f"diffusers has no scheduler {scheduler!r}.") from None
        self.scheduler = scheduler_cls.from_config(teacher.scheduler.config, **(scheduler_kwargs or {}))
        self.teacher, self.steps, self.guidance_scale = teacher, steps, guidance_scale

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, backbone: str, dtype: torch.dtype = torch.float32, device="cpu", **kwargs
    ) -> MultiStepPipeline:
        return cls(load_teacher(backbone, str(folder), dtype=dtype, device=device), **kwargs)

    @torch.no_grad()
    def latents(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        self.check(prompts, seeds)
        teacher, scheduler = self.teacher, self.scheduler
        device = next(teacher.denoiser.parameters()).device
        dtype = teacher.denoiser.dtype
        cond = teacher.encode(list(prompts))
        guided = self.guidance_scale != 1.0
        embeds = cond.cat([cond, teacher.encode([""]).repeat(len(prompts))]) if guided else cond
        scheduler.set_timesteps(self.steps, device=device)
        x = seeded_noise(seeds, teacher.latent_shape, device=device, dtype=torch.float32) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t).to(dtype)
            out = teacher.predict(x_in, t, embeds).float()
            if guided:
                c, u = out.chunk(2)
                out = u + self.guidance_scale * (c - u)
            x = scheduler.step(out, t, x).prev_sample
        return x
