"""The trained models of a run and its identity.

The student (the one-step generator G) and the fake score model are trainable copies of the
teacher's denoiser with adapters (:data:`ROLES`, :func:`build_role`), each with its AdamW optimiser
and warm-up schedule (:func:`build_optimizer`). :func:`run_fingerprint` names what a checkpoint
belongs to: the settings that change the result (all but :data:`RESULT_NEUTRAL`), the backbone and
the weights of the teacher and of the auxiliary loss's scorer.
"""

from __future__ import annotations

import copy
import hashlib
import json

import torch
from torch import nn

from ..adapters import apply_adapter
from ..backbones import Teacher
from .config import DistillConfig, OptimConfig

ROLES = ("student", "fake")
RESULT_NEUTRAL = (
    "gradient_checkpointing",
    "channels_last",
    "compile_blocks",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "eval_every",
    "embedding_cache",
)  # settings a resumed run may change


def build_role(teacher: Teacher, spec, init: nn.Module | None = None) -> nn.Module:
    """A trainable copy of the teacher's denoiser (or of ``init``, a denoiser of the same architecture:
    the student's ``student_init``) as ``spec`` says, with fp32 trainable weights."""
    base = copy.deepcopy(teacher.denoiser)
    if init is not None:
        try:
            base.load_state_dict(init.state_dict())
        except RuntimeError as error:
            raise ValueError(f"student_init is not a denoiser of {teacher.spec.name}'s architecture: {error}") from None
    model = apply_adapter(base, spec)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model.train()


def build_optimizer(model: nn.Module, optim: OptimConfig):
    """AdamW on ``model``'s trainable parameters and its linear warm-up schedule (``optim.warmup_steps``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.is_cuda for p in params)  # one kernel for all parameters on a GPU; CPU keeps foreach
    opt = torch.optim.AdamW(
        params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay, fused=fused or None
    )
    warmup = optim.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return opt, sched


def _checksum(module: nn.Module) -> list[str]:
    """A float64 checksum of a module's weights: the sum and the sum of squares of all parameters."""
    params = list(module.parameters())
    with torch.no_grad():
        total = sum(p.double().sum().item() for p in params)
        squares = sum(p.double().square().sum().item() for p in params)
    return [f"{total:.9g}", f"{squares:.9g}"]


def run_fingerprint(config: DistillConfig, teacher: Teacher, scorer: nn.Module | None = None) -> str:
    """What a checkpoint belongs to: the settings that change the result, the backbone and the
    teacher's weights, and the auxiliary loss's scorer's if any (a run may resume with other speed,
    logging or checkpoint settings)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in RESULT_NEUTRAL}
    record = {
        "config": settings,
        "backbone": teacher.spec.name,
        "denoiser": dict(teacher.denoiser.config),
        "weights": _checksum(teacher.denoiser),
    }
    if scorer is not None:
        record["scorer"] = _checksum(scorer)
    blob = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
