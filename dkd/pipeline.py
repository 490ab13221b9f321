"""Sampling: the one-step student (``OneStepPipeline``), batched, one seed per image.

Each image's starting noise comes from its own CPU generator seeded with its seed, so an image
does not depend on the batch it is generated in, nor on the device: any shard of an evaluation
set can be regenerated alone (``shared/reference.md`` section 3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones import Teacher, load_teacher
from .train.export import STUDENT_INFO
from .train.step import generate


def seeded_noise(seeds: Sequence[int], shape: tuple[int, ...], device="cpu", dtype=torch.float32) -> torch.Tensor:
    """One standard-normal tensor of ``shape`` per seed, stacked (drawn on the CPU)."""
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Images in [-1, 1], ``(B, 3, H, W)``, to 8-bit RGB PIL images."""
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in array]


class OneStepPipeline:
    """Text to image in one network call of the distilled student, then the VAE decoder."""

    def __init__(self, teacher: Teacher, t_init: int = 999):
        self.teacher, self.t_init = teacher, t_init

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: torch.dtype = torch.float32, device="cpu",
                        backbone: Optional[str] = None) -> "OneStepPipeline":
        """Load ``folder`` (an exported ``pipeline/``); ``backbone`` and ``t_init`` are read from
        its ``dkd_student.json`` unless ``backbone`` is given."""
        info_path = Path(folder) / STUDENT_INFO
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        name = backbone or info.get("backbone")
        if name is None:
            raise ValueError(f"{folder} has no {STUDENT_INFO}: pass backbone= (e.g. 'sd15').")
        return cls(load_teacher(name, str(folder), dtype=dtype, device=device), t_init=info.get("t_init", 999))

    @torch.no_grad()
    def latents(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds.")
        teacher = self.teacher
        device = next(teacher.denoiser.parameters()).device
        noise = seeded_noise(seeds, teacher.latent_shape, device=device, dtype=teacher.denoiser.dtype)
        return generate(teacher, teacher.denoiser, noise, teacher.encode(list(prompts)), self.t_init)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16) -> list[Image.Image]:
        """One PIL image per (prompt, seed), generated ``batch_size`` at a time."""
        images = []
        for start in range(0, len(prompts), batch_size):
            latents = self.latents(prompts[start:start + batch_size], seeds[start:start + batch_size])
            images += to_pil(self.teacher.decode(latents))
        return images
