"""The distillation objective: DKD's or a baseline's, as one composition of a few hooks.

Every objective trains the same three networks (the frozen teacher, the one-step generator and the
fake score model) in the same loop (``dkd.train.loop``); an :class:`ObjectiveConfig` says how, hook by
hook (``docs/baselines.md`` gives each method's sources):

generator input
    ``t_init`` and ``scaled_input``: the generator sees ``z`` at ``t_init`` (DKD, DMD2, SwiftBrush:
    999), or ``sigma_{t_init} z``, the DDPM noising of ``x0 = 0`` (SiD-LSG: ``t_init = 625``).
guidance, per role
    ``guidance_scale`` (real model in the generator loss), ``fake_guidance_scale`` (fake model in the
    generator loss), ``fake_train_guidance_scale`` (CFG on the fake's output in its own loss, SiD's
    kappa_1), each a constant; or ``guidance_range = (a, b)``: one scale ``~ U(a, b)`` per generator
    loss, shared by the real and the fake model (PG-SB).
generator loss
    ``generator_loss``: ``"dmd"`` (DMD2's normalised score difference; DKD), ``"sds"``
    (SwiftBrush's ``sigma_t^2`` weight) or ``"sid"`` (SiD's loss with ``sid_alpha``, backpropagated
    through the real and the fake model); ``t_range`` of its timesteps.
fake loss
    ``fake_t_range``, ``fake_weighting`` (``"uniform"``, or ``"alpha_bar"``: SwiftBrush's
    ``mean((alpha_t eps_fake - alpha_t eps)^2)``), and null-prompt dropout ``null_prompt_p`` for
    the whole batch or per sample (``null_prompt_per``).
auxiliary loss on the samples
    ``clip_weight`` (at the first step) going linearly to ``clip_weight_end`` (at the last) times SwiftBrush
    v2's clamped CLIP loss ``max(0, clip_margin - score)`` of an image-text scorer (``dkd.train.scorers``);
    0: none.
schedule
    ``order`` (the generator's update first, or the fake's: SiD) and ``fake_batch``: ``"shared"``
    (the fake trains on the generator phase's detached samples) or ``"fresh"`` (its own prompts,
    noise and samples). The update ratio is ``DistillConfig.generator_every``; the optimisers
    are ``DistillConfig.optim_student`` and ``optim_fake``.

:data:`OBJECTIVES` holds each method's hooks as its sources give them; ``ObjectiveConfig.named(name,
**overrides)`` starts from one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..backbones import PromptEmbeds
from ..vocabulary import OBJECTIVE_PREFIXES
from .schedule import timestep_range

NAMES = ("dkd", *OBJECTIVE_PREFIXES.values())  # the keys of OBJECTIVES (the run names' prefixes: dkd/vocabulary.yaml)
GENERATOR_LOSSES = ("dmd", "sds", "sid")
FAKE_WEIGHTINGS = ("uniform", "alpha_bar")
NULL_PROMPT_PER = ("batch", "sample")
ORDERS = ("generator_first", "fake_first")
FAKE_BATCHES = ("shared", "fresh")


def require_numbers(**values) -> None:
    """One clear error for a setting that must be a number (or a tuple of numbers) and is not; YAML 1.1
    reads ``1e-4``, without a dot, as text."""
    for name, value in values.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
            hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if any(isinstance(v, str) for v in items) else ""
            raise ValueError(f"{name} must be a number; got {value!r}{hint}.")


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}.")


@dataclass(frozen=True)
class ObjectiveConfig:
    """The hooks of one objective (module docstring); the defaults are DKD's (paper 4.1, F.1)."""

    name: str = "dkd"
    t_init: int = 999
    scaled_input: bool = False
    guidance_scale: float = 1.5
    fake_guidance_scale: float = 1.0
    fake_train_guidance_scale: float = 1.0
    guidance_range: tuple[float, float] | None = None
    generator_loss: str = "dmd"
    sid_alpha: float = 1.0
    t_range: tuple[float, float] = (0.02, 0.98)
    fake_t_range: tuple[float, float] = (0.02, 0.98)
    fake_weighting: str = "uniform"
    null_prompt_p: float = 0.0
    null_prompt_per: str = "batch"
    order: str = "generator_first"
    fake_batch: str = "shared"
    clip_weight: float = 0.0
    clip_weight_end: float = 0.0
    clip_margin: float = 0.35

    def __post_init__(self):
        _choice("objective", self.name, NAMES)
        _choice("generator_loss", self.generator_loss, GENERATOR_LOSSES)
        _choice("fake_weighting", self.fake_weighting, FAKE_WEIGHTINGS)
        _choice("null_prompt_per", self.null_prompt_per, NULL_PROMPT_PER)
        _choice("order", self.order, ORDERS)
        _choice("fake_batch", self.fake_batch, FAKE_BATCHES)
        if isinstance(self.t_init, bool) or not isinstance(self.t_init, int) or self.t_init < 0:
            raise ValueError(f"t_init must be a non-negative integer timestep; got {self.t_init!r}.")
        if not isinstance(self.scaled_input, bool):
            raise ValueError(f"scaled_input must be true or false; got {self.scaled_input!r}.")
        scales = (
            "guidance_scale",
            "fake_guidance_scale",
            "fake_train_guidance_scale",
            "sid_alpha",
            "null_prompt_p",
            "clip_weight",
            "clip_weight_end",
        )
        require_numbers(**{name: getattr(self, name) for name in scales})
        if not all(getattr(self, name) >= 0 for name in scales):
            raise ValueError(f"{', '.join(scales)} must be >= 0.")
        require_numbers(clip_margin=self.clip_margin)
        if self.null_prompt_p > 1:
            raise ValueError(f"null_prompt_p must be a probability; got {self.null_prompt_p!r}.")
        if self.guidance_range is not None:
            low_high = tuple(self.guidance_range)
            require_numbers(guidance_range=low_high)
            if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1]:
                raise ValueError(f"guidance_range must be (low, high) with 0 <= low <= high; got {low_high!r}.")
            object.__setattr__(self, "guidance_range", low_high)
        for name in ("t_range", "fake_t_range"):
            low_high = tuple(getattr(self, name))
            if len(low_high) != 2:
                raise ValueError(f"{name} must be (low_frac, high_frac); got {low_high!r}.")
            require_numbers(**{name: low_high})
            timestep_range(*low_high, num_train_timesteps=1000)
            object.__setattr__(self, name, low_high)
        if self.order == "fake_first" and self.fake_batch == "shared":
            raise ValueError("order 'fake_first' needs fake_batch 'fresh': no generator sample exists yet to share.")

    @classmethod
    def named(cls, name: str, /, **overrides) -> ObjectiveConfig:
        """Objective ``name``'s hooks (:data:`OBJECTIVES`) with ``overrides`` (field names) replaced."""
        _choice("objective", name, NAMES)
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown objective settings: {unknown}.")
        if overrides.get("name", name) != name:
            raise ValueError(f"objective {name!r} cannot be renamed to {overrides['name']!r}.")
        return dataclasses.replace(OBJECTIVES[name], **overrides)

    @property
    def scored(self) -> bool:
        """Whether the generator loss has the auxiliary image-text term (it then needs a scorer)."""
        return self.clip_weight > 0 or self.clip_weight_end > 0

    def clip_weight_at(self, step: int, total_steps: int) -> float:
        """The auxiliary loss's weight at ``step`` of ``total_steps``: ``clip_weight`` going linearly to
        ``clip_weight_end`` (SwiftBrush v2: "starting with a weight of 0.1 and gradually reducing to zero";
        the shape is not given, linear is our choice)."""
        progress = step / max(total_steps - 1, 1)
        return self.clip_weight + (self.clip_weight_end - self.clip_weight) * min(max(progress, 0.0), 1.0)

    @property
    def keeps_graph(self) -> bool:
        """Whether the generator loss backpropagates through the real and the fake model (SiD)."""
        return self.generator_loss == "sid"

    def guidance(self, generator: torch.Generator | None, device) -> tuple[float | torch.Tensor, ...]:
        """``(real, fake)`` guidance scales of one generator loss: the constants, or one draw of
        :func:`sample_guidance` for both."""
        if self.guidance_range is None:
            return self.guidance_scale, self.fake_guidance_scale
        scale = sample_guidance(*self.guidance_range, generator=generator, device=device)
        return scale, scale


def sample_guidance(low: float, high: float, *, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """One guidance scale ``~ U(low, high)`` (a float64 0-d tensor), drawn from ``generator``: the run's
    generator, whose state the checkpoints keep, so a resumed run draws what the uninterrupted one did."""
    u = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    return low + (high - low) * u


def drop_prompts(
    embeds: PromptEmbeds, uncond: PromptEmbeds, p: float, per: str, *, generator: torch.Generator | None
) -> tuple[PromptEmbeds, torch.Tensor]:
    """Null-prompt dropout: each sample's (``per="sample"``) or the whole batch's (``per="batch"``)
    prompt replaced by the empty prompt with probability ``p``; returns the embeddings and the
    dropped mask (bool, one per sample). ``uncond`` holds one embedding per sample."""
    _choice("null_prompt_per", per, NULL_PROMPT_PER)
    batch, device = len(embeds), embeds.hidden_states.device
    if p == 0:
        return embeds, torch.zeros(batch, dtype=torch.bool, device=device)
    draws = torch.rand(batch if per == "sample" else 1, generator=generator, device=device)
    dropped = (draws < p).expand(batch)
    return embeds.where(~dropped, uncond), dropped


OBJECTIVES: dict[str, ObjectiveConfig] = {"dkd": ObjectiveConfig()}  # completed below, one per name of NAMES
# SiD-LSG (mingyuanzhou/SiD-LSG sid_training_loop.py, run_sid.sh): generator input sigma_625 z at t = 625,
# kappa_1..kappa_4 all 1.5 (the paper's F.1), t ~ U{20..979} in both losses, per-sample null prompts
# (p = 0.1), the fake's update first, on fresh prompts and noise, and the loss through both models.
OBJECTIVES["sid_lsg"] = ObjectiveConfig(
    name="sid_lsg",
    t_init=625,
    scaled_input=True,
    guidance_scale=1.5,
    fake_guidance_scale=1.5,
    fake_train_guidance_scale=1.5,
    generator_loss="sid",
    sid_alpha=1.0,
    t_range=(0.02, 0.979),
    fake_t_range=(0.02, 0.979),
    null_prompt_p=0.1,
    null_prompt_per="sample",
    order="fake_first",
    fake_batch="fresh",
)
# SwiftBrush (VinAIResearch/SwiftBrush train_swiftbrush.py): CFG 4.5 on the teacher and on the LoRA
# fake alike, sigma_t^2 weight, t ~ U{20..980}; the fake's loss alpha-bar weighted over t ~ U{0..999}
# with the whole batch's prompts dropped with p = 0.1; the generator's update first, 1:1, same samples.
OBJECTIVES["swiftbrush"] = ObjectiveConfig(
    name="swiftbrush",
    guidance_scale=4.5,
    fake_guidance_scale=4.5,
    generator_loss="sds",
    t_range=(0.02, 0.98),
    fake_t_range=(0.0, 1.0),
    fake_weighting="alpha_bar",
    null_prompt_p=0.1,
    null_prompt_per="batch",
)
# PG-SB (Nguyen et al., SNOOPI, arXiv 2412.02687): SwiftBrush with one guidance scale ~ U(a, b) per step for
# the teacher and the LoRA fake (U(0.5, 3) for PixArt-alpha, the DKD paper's only PG-SB row; SD: U(0.5, 4)),
# and, following SwiftBrush v2, the clamped CLIP loss with margin 0.37, weight 0.1 going to 0.
OBJECTIVES["pg_sb"] = dataclasses.replace(
    OBJECTIVES["swiftbrush"],
    name="pg_sb",
    guidance_range=(0.5, 3.0),
    clip_weight=0.1,
    clip_weight_end=0.0,
    clip_margin=0.37,
)
# SwiftBrush v2 (Dao et al., arXiv 2408.14176): SwiftBrush's objective with the clamped CLIP loss (margin 0.35,
# weight 0.1 going to 0) for its efficient scheme B (a LoRA student); its scheme A (a full student) trains
# without it (clip_weight 0 in the run's settings); both start from SD-Turbo (DistillConfig.student_init) and
# are merged after training (dkd.train.merge).
OBJECTIVES["swiftbrush_v2"] = dataclasses.replace(
    OBJECTIVES["swiftbrush"], name="swiftbrush_v2", clip_weight=0.1, clip_weight_end=0.0, clip_margin=0.35
)
