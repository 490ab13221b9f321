"""The job of one distillation run: what every process needs to train it, and the run once finished.

A :class:`DistillJob` says everything a process needs to train the run (config, teacher, prompts,
training folder, convergence-curve settings); it is written as ``<train_dir>/job.json`` for the
ranks started by :mod:`dkd.train.launch`. Each process that trains it loads the teacher
(:func:`load_job_teacher`), the prompts (:func:`read_job_prompts`) and the evaluation hook of its
curve (:func:`curve_hook`). A finished run is loaded by one process from its last checkpoint
(:func:`finished_run`), whatever number of processes trained it, as a :class:`Distilled`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import latest_checkpoint, load_state, load_trainable_state, load_weights
from .config import DistillConfig
from .loop import Distiller, DistillResult
from .models import ROLES

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
CURVE_KEYS = frozenset({"evaluator", "prompts", "count", "every", "seed", "stats", "features"})
JOB_FILE = "job.json"


@dataclass(frozen=True)
class DistillJob:
    """One run's job: ``config`` (its ``DistillConfig``; the backbone is ``config.backbone``), the
    teacher's ``source`` (folder or hub id) and ``dtype`` on a GPU (float32 on the CPU), the
    ``prompts`` file, ``train_dir`` (checkpoints, logs, this job's JSON), the evaluation hook's
    ``curve`` settings (Fig. 16: evaluator, prompts, count, every, seed, stats, features) or None, and
    the image-text ``scorer`` of an objective with the clamped CLIP loss (``dkd.train.scorers.ScorerSpec``
    fields) or None."""

    config: DistillConfig
    source: str
    dtype: str
    prompts: str
    train_dir: str
    curve: dict | None = None
    scorer: dict | None = None

    def __post_init__(self):
        if not isinstance(self.config, DistillConfig):
            raise TypeError(f"config must be a DistillConfig; got {type(self.config).__name__}.")
        for name in ("source", "prompts", "train_dir"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty path; got {value!r}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; got {self.dtype!r}.")
        if self.curve is not None and (not isinstance(self.curve, dict) or set(self.curve) != CURVE_KEYS):
            got = sorted(self.curve) if isinstance(self.curve, dict) else repr(self.curve)
            raise ValueError(f"curve must be None or a mapping with keys {sorted(CURVE_KEYS)}; got {got}.")
        if self.scorer is not None:
            from .scorers import ScorerSpec

            object.__setattr__(self, "scorer", ScorerSpec(**self.scorer).to_dict())  # one error if malformed
        if self.config.objective.scored and self.scorer is None:
            raise ValueError(f"objective {self.config.objective.name!r} scores its samples: the job needs a scorer.")

    @property
    def path(self) -> Path:
        """Where the job's JSON goes: ``<train_dir>/job.json``."""
        return Path(self.train_dir) / JOB_FILE

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "config": self.config.to_dict()}

    def write(self) -> Path:
        """Write the job as JSON into ``train_dir``, atomically; returns the file."""
        from ..io import atomic_write_text

        return atomic_write_text(self.path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike) -> DistillJob:
        """The job written by :meth:`write`; anything malformed is one ``ValueError`` naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable distillation job ({err}).") from err
        fields = {f.name for f in dataclasses.fields(cls)}
        if (
            not isinstance(data, dict)
            or set(data) - fields
            or {"config", "source", "dtype", "prompts", "train_dir"} - set(data)
        ):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"{path}: a distillation job is an object with keys {sorted(fields)} (curve and scorer optional); "
                f"got {keys}."
            )
        try:
            config = DistillConfig.from_dict(data["config"]) if isinstance(data["config"], dict) else data["config"]
            return cls(**{**data, "config": config})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


@dataclass
class Distilled:
    """A finished run in the parent process: its ``config``, the ``teacher`` (for the export), the
    trained models (``result``) and its training ``cost`` (``checkpoint.training_cost``, summed
    over ``attempts``: device, processes, seconds and steps of each)."""

    config: DistillConfig
    teacher: Any
    result: DistillResult
    cost: dict
    attempts: list


def _device_dtype(job: DistillJob, device: torch.device) -> torch.dtype:
    return getattr(torch, job.dtype) if device.type == "cuda" else torch.float32


def load_job_teacher(job: DistillJob, device: torch.device):
    """The job's teacher on ``device``: in ``job.dtype`` on a GPU, float32 on the CPU."""
    from ..backbones import load_teacher

    return load_teacher(job.config.backbone, job.source, dtype=_device_dtype(job, device), device=device)


def load_job_scorer(job: DistillJob, device: torch.device):
    """The job's image-text scorer on ``device`` (``dkd.train.scorers.load_scorer``), or None."""
    from .scorers import load_scorer

    return None if job.scorer is None else load_scorer(job.scorer, device)


def read_job_prompts(job: DistillJob) -> list[str]:
    """The job's training prompts (empty lines skipped), logged with their count and the run's config."""
    from ..data import read_prompts

    prompts = read_prompts(job.prompts)
    log.info(
        "%s: %d prompts (%d empty lines skipped), %s", job.prompts, len(prompts), prompts.skipped_empty, job.config
    )
    return prompts.prompts


def curve_hook(job: DistillJob, teacher, device: torch.device) -> Callable | None:
    """The evaluation hook of the run's convergence curve (None without one). The evaluator is built
    at the hook's first call: only the main process calls it, the other ranks only hold it."""
    if job.curve is None:
        return None
    from ..data import read_prompts
    from ..evaluators import Evaluator, training_curve

    curve, built = job.curve, []

    def evaluate(step: int, student) -> dict:
        if not built:
            built.append(
                training_curve(
                    Evaluator(**curve["evaluator"], device=str(device)),
                    teacher,
                    prompts=read_prompts(curve["prompts"]).prompts[: curve["count"]],
                    seed=curve["seed"],
                    folder=Path(job.train_dir) / "curve-images",
                    stats=curve["stats"],
                    features=curve["features"],
                    t_init=job.config.objective.t_init,
                    scaled_input=job.config.objective.scaled_input,
                )
            )
        return built[0](step, student)

    return evaluate


def finished_run(config: DistillConfig, teacher, prompts, output_dir, scorer=None) -> DistillResult:
    """The models of a finished run (latest checkpoint at the last step), whatever number of processes
    trained it, in one process; writes nothing. (``distill`` would refuse a checkpoint of another
    process count, and rewrite ``config.json`` and the logs.) Raises if the run is not finished."""
    config = dataclasses.replace(config, embedding_cache=None)
    distiller = Distiller(config, teacher, prompts, output_dir, scorer=scorer)
    path = latest_checkpoint(distiller.checkpoint_root)
    if path is None:
        raise FileNotFoundError(f"{distiller.checkpoint_root}: no checkpoint; the run has not trained yet.")
    state = load_state(path)
    distiller.check_fingerprint(path, state)
    if state["step"] != distiller.total_steps:
        raise ValueError(
            f"{path}: the run is at step {state['step']} of {distiller.total_steps}, not finished; resume it first."
        )
    for role, tensors in load_weights(path, list(ROLES)).items():
        load_trainable_state(distiller.acc.unwrap_model(distiller.models[role]), tensors)
    return DistillResult(
        distiller.output_dir, state["step"], path, *(distiller.acc.unwrap_model(distiller.models[r]) for r in ROLES)
    )


def run_is_finished(train_dir: Path) -> bool:
    """Whether the latest checkpoint under ``train_dir`` is at the run's last step."""
    path = latest_checkpoint(train_dir / "checkpoints")
    if path is None:
        return False
    state = load_state(path)
    return state["step"] >= state["total_steps"]
