"""``DistillConfig``: everything that defines one distillation run, validated at construction."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..adapters import AdapterSpec
from ..backbones import backbone_spec
from .objective import OBJECTIVES, ObjectiveConfig, require_numbers

MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with gradient clipping and a linear warm-up to a constant learning rate (DMD2).

    With ``weight_decay = 0`` AdamW is Adam (SwiftBrush; SiD with ``betas = (0, 0.999)``).
    ``grad_clip`` is the largest gradient norm (None: no clipping; the norm is still checked for NaN).
    """

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    grad_clip: float | None = 10.0
    warmup_steps: int = 0

    def __post_init__(self):
        require_numbers(lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        if self.grad_clip is not None:
            require_numbers(grad_clip=self.grad_clip)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int):
            raise ValueError(f"warmup_steps must be a whole number; got {self.warmup_steps!r}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}.")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1); got {self.betas!r}.")
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.weight_decay < 0 or not (self.grad_clip is None or self.grad_clip > 0) or self.warmup_steps < 0:
            raise ValueError("weight_decay and warmup_steps must be >= 0 and grad_clip > 0 (or None).")


@dataclass(frozen=True)
class DistillConfig:
    """One DKD (or baseline) run: paper 4.1 and F.1 defaults. ``objective`` says which method trains
    (``dkd.train.objective``: DKD's hooks by default, or a baseline's).

    ``batch_size`` is the global batch (128 in the paper); each optimiser step accumulates
    ``batch_size / (per_device_batch * processes)`` micro-batches. The run ends after
    ``max_steps`` optimiser steps if given, else after ``epochs`` passes over the prompts.
    The fake model is updated every step and the generator every ``generator_every`` steps
    (1 = Algorithm 1's alternation; DMD2's ``dfake_gen_update_ratio``).
    """

    backbone: str
    student: AdapterSpec
    fake: AdapterSpec
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim_student: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    optim_fake: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-2))
    batch_size: int = 128
    per_device_batch: int = 16
    epochs: int = 2
    max_steps: int | None = None
    generator_every: int = 1
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    channels_last: bool = False  # NHWC convolutions (dkd.train.speed); numerics unchanged up to kernel choice
    compile_blocks: bool | tuple[str, ...] = False  # torch.compile of each repeated block (or of the named classes)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_every: int | None = None  # evaluation hook period (Fig. 16 curves); None: no evaluation
    embedding_cache: str | None = None  # folder of cached prompt embeddings (dkd.train.embeddings); None: encode
    student_init: str | None = (
        None  # a diffusers folder or hub id whose denoiser starts the student; None: the teacher's
    )

    def __post_init__(self):
        backbone_spec(self.backbone)
        for role, spec in (("student", self.student), ("fake", self.fake)):
            if not isinstance(spec, AdapterSpec):
                raise TypeError(f"{role} must be an AdapterSpec; got {type(spec).__name__}.")
            if spec.backbone != self.backbone or spec.role != role:
                raise ValueError(f"{role} spec must have backbone={self.backbone!r} and role={role!r}; got {spec}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be a whole number; got {self.seed!r}.")
        for name in (
            "batch_size",
            "per_device_batch",
            "epochs",
            "generator_every",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        for name in ("max_steps", "eval_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}.")
        if self.batch_size % self.per_device_batch:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of per_device_batch {self.per_device_batch}."
            )
        for name in ("gradient_checkpointing", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; got {getattr(self, name)!r}.")
        if not isinstance(self.compile_blocks, bool):
            names = self.compile_blocks
            if (
                isinstance(names, str)
                or not isinstance(names, (list, tuple))
                or not names
                or not all(isinstance(n, str) and n.isidentifier() for n in names)
            ):
                raise ValueError(
                    "compile_blocks must be true, false or a list of module class names "
                    f"(e.g. [BasicTransformerBlock, ResnetBlock2D]); got {names!r}."
                )
            object.__setattr__(self, "compile_blocks", tuple(names))
        if isinstance(self.embedding_cache, os.PathLike):
            object.__setattr__(self, "embedding_cache", os.fspath(self.embedding_cache))
        if self.embedding_cache is not None and (not isinstance(self.embedding_cache, str) or not self.embedding_cache):
            raise ValueError(f"embedding_cache must be a folder path or None; got {self.embedding_cache!r}.")
        if self.student_init is not None and (not isinstance(self.student_init, str) or not self.student_init):
            raise ValueError(f"student_init must be a diffusers folder or hub id, or None; got {self.student_init!r}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}; got {self.mixed_precision!r}.")

    def accumulation_steps(self, processes: int) -> int:
        """Micro-batches per optimiser step and process, for ``processes`` data-parallel processes."""
        per_step = self.per_device_batch * processes
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of per_device_batch x processes = {per_step}."
            )
        return self.batch_size // per_step

    def updates(self, steps: int) -> dict[str, int]:
        """The optimiser updates of each model after ``steps`` steps: the fake's every step, the
        generator's at the steps ``0, k, 2k, ...`` (``k = generator_every``)."""
        return {"generator_updates": -(-steps // self.generator_every), "fake_updates": steps}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DistillConfig:
        """Inverse of ``to_dict`` (e.g. from a workflow's YAML or a checkpoint's JSON). A nested
        setting given in part (``optim_student: {warmup_steps: 100}``) keeps the defaults of the rest."""
        data = dict(data)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown distillation settings: {sorted(unknown)}.")
        defaults = {
            f.name: f.default_factory() for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING
        }
        objective = data.get("objective")
        if isinstance(objective, dict):  # the named objective's hooks are the defaults of the rest
            name = objective.get("name", "dkd")
            if name not in OBJECTIVES:
                raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}; got {name!r}.")
            defaults["objective"] = OBJECTIVES[name]
        nested = {
            "student": AdapterSpec,
            "fake": AdapterSpec,
            "objective": ObjectiveConfig,
            "optim_student": OptimConfig,
            "optim_fake": OptimConfig,
        }
        for key, kind in nested.items():
            if key not in data or isinstance(data[key], kind):
                continue
            if not isinstance(data[key], dict):
                raise ValueError(f"{key} must be a mapping of its settings; got {data[key]!r}.")
            base = dataclasses.asdict(defaults[key]) if key in defaults else {}
            extra = sorted(set(data[key]) - {f.name for f in dataclasses.fields(kind)})
            if extra:
                raise ValueError(f"unknown {key} settings: {extra}.")
            try:
                data[key] = kind(**{**base, **data[key]})
            except TypeError as error:  # a required field missing
                raise ValueError(f"{key}: {error}.") from None
        return cls(**data)
