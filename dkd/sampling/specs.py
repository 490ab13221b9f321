"""``MultiStepSpec``: how to sample a multi-step diffusers text-to-image model (a teacher row, or a
published checkpoint of ``dkd.sampling.published``), checked when built; ``scheduler_class`` finds a
diffusers scheduler by name. ``dkd.sampling.samplers.DiffusersSampler`` runs a spec.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MultiStepSpec:
    """A multi-step diffusers text-to-image model: a teacher row of Tables 1/5/6/9, or a published
    checkpoint (SD-Turbo, Hyper-SD, LCM-LoRA, YOSO, InstaFlow, DMD2 ...; see ``dkd.sampling.published``).

    ``source``: hub id or local diffusers folder; ``custom_pipeline``: the name of a diffusers
    *community* pipeline to run the folder with (InstaFlow's ``instaflow_one_step``; fetched from
    diffusers' own mirror, so no third-party code runs);
    ``denoiser_weights``: a state dict that replaces the whole U-Net/transformer (DMD2 ships one):
    a local file, a local folder + ``denoiser_weight_name``, or a hub repo + ``denoiser_weight_name``;
    ``denoiser_from``: a hub repo or folder whose ``unet/`` or ``transformer/`` (config and weights)
    replaces the pipeline's denoiser (PixArt-α 256, whose repo holds only ``transformer/``: the
    rest comes from ``source``, ``dkd.backbones.components_source``);
    ``adapter``: optional LoRA weights loaded with ``pipe.load_lora_weights``
    (``adapter_weight_name`` picks the file), fused at ``adapter_scale``;
    ``scheduler``: a diffusers scheduler class name, built ``from_config`` of the checkpoint's
    scheduler with ``scheduler_kwargs`` (e.g. ``timestep_spacing="trailing"``); None keeps the
    checkpoint's; ``timesteps``: explicit descending timesteps for schedulers that accept them
    (one-step LCM-style checkpoints conditioned on t=999), else ``steps``; ``eta``: passed to the
    pipeline call when set (TCD's stochasticity); ``guidance_scale`` as in diffusers (<= 1: no CFG).
    """

    source: str
    steps: int = 25
    guidance_scale: float = 3.0
    scheduler: str | None = None
    scheduler_kwargs: dict = field(default_factory=dict)
    timesteps: tuple[int, ...] | None = None
    adapter: str | None = None
    adapter_weight_name: str | None = None
    resolution: int | None = None
    adapter_scale: float = 1.0
    denoiser_weights: str | None = None
    denoiser_weight_name: str | None = None
    eta: float | None = None
    custom_pipeline: str | None = None
    denoiser_from: str | None = None

    def __post_init__(self):
        if self.steps <= 0 or self.guidance_scale < 0:
            raise ValueError(f"steps must be > 0 and guidance_scale >= 0; got {self.steps}, {self.guidance_scale}.")
        if not isinstance(self.scheduler_kwargs, dict):
            raise ValueError(f"scheduler_kwargs must be a mapping; got {self.scheduler_kwargs!r}.")
        if self.scheduler is None and self.scheduler_kwargs:
            raise ValueError("scheduler_kwargs need a scheduler class name (scheduler=None keeps the checkpoint's).")
        if self.timesteps is not None:
            steps = tuple(self.timesteps)
            if (
                not steps
                or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in steps)
                or any(a <= b for a, b in zip(steps, steps[1:]))
            ):
                raise ValueError(
                    f"timesteps must be non-negative integers in descending order; got {self.timesteps!r}."
                )
            object.__setattr__(self, "timesteps", steps)
        if self.adapter_weight_name and not self.adapter:
            raise ValueError("adapter_weight_name is set but adapter is not.")
        if self.denoiser_weight_name and not self.denoiser_weights:
            raise ValueError("denoiser_weight_name is set but denoiser_weights is not.")
        if not math.isfinite(self.adapter_scale):
            raise ValueError(f"adapter_scale must be finite; got {self.adapter_scale}.")
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1]; got {self.eta}.")
        if self.resolution is not None and (self.resolution <= 0 or self.resolution % 8):
            raise ValueError(f"resolution must be a positive multiple of 8; got {self.resolution}.")
        if self.custom_pipeline is not None and not COMMUNITY_PIPELINE.match(self.custom_pipeline):
            raise ValueError(
                f"custom_pipeline must name a diffusers community pipeline (letters, digits, '_'); got "
                f"{self.custom_pipeline!r}: local files and hub repos would run unreviewed code."
            )


COMMUNITY_PIPELINE = re.compile(r"^[A-Za-z0-9_]+$")


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class called ``name``, with one clear error for anything else."""
    import diffusers
    from diffusers import SchedulerMixin

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"{name!r} is not a diffusers scheduler class (diffusers {diffusers.__version__}).")
    return cls
