"""Training checkpoints: trainable weights (safetensors), optimiser/scheduler/RNG state, step.

Layout: ``<root>/step-00000100/`` with ``<name>.safetensors`` per trained model (only its
trainable parameters), ``training_state.pt`` (optimisers, schedulers, and the random state of
every process) and ``state.json``. A checkpoint is written to ``step-XXXXXXXX.tmp`` and renamed into
place, so a job killed while saving leaves the previous checkpoint as the latest one.

``state.json`` also records the run's training cost (:func:`training_cost`): one entry per attempt
(a job that trained the run until it finished or stopped) with its device, processes and
wall-clock seconds of training up to that checkpoint; a resumed run carries the earlier entries on.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"


def checkpoint_path(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"{PREFIX}{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit() and (p / "state.json").is_file()
    ]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model`` (unwrapped of DDP), detached, on the CPU."""
    model = getattr(model, "module", model)
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable parameters into ``model``; every trainable one must be present."""
    model = getattr(model, "module", model)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = set(params) - set(tensors), set(tensors) - set(params)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the model: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    *,
    weights: dict[str, dict[str, torch.Tensor]],
    training_state: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write one checkpoint atomically (then keep only the ``keep`` newest)."""
    final = checkpoint_path(root, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, tensors in weights.items():
        save_file(tensors, str(tmp / f"{name}.safetensors"))
    torch.save(training_state, tmp / "training_state.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    for written in tmp.iterdir():  # on disk before the rename makes the checkpoint visible
        with open(written, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """This process's random state: the training generator and torch's global generators."""
    state = {"generator": generator.get_state(), "cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights(path: str | os.PathLike, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The trainable weights per model name of the checkpoint at ``path``."""
    return {name: load_file(str(Path(path) / f"{name}.safetensors")) for name in names}


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """``state.json`` of the checkpoint at ``path`` (step, processes, fingerprint, attempts)."""
    return json.loads((Path(path) / "state.json").read_text())


def load_checkpoint(path: str | os.PathLike, names: list[str]) -> tuple[dict, dict, dict]:
    """``(weights per name, training_state, state)`` of the checkpoint at ``path``."""
    training_state = torch.load(Path(path) / "training_state.pt", map_location="cpu", weights_only=True)
    return load_weights(path, names), training_state, load_state(path)


SECONDS_PER_DAY = 86400.0


def training_cost(state: dict[str, Any]) -> dict[str, float | int]:
    """The training cost a checkpoint's ``state`` records (Table 5's last column), summed over the
    run's attempts, each ``{"device", "processes", "seconds", "steps"}``:

    - ``gpu_days`` = Σ seconds × processes / 86400 (device-days: each process holds one device),
    - ``train_hours`` = Σ seconds / 3600 (wall-clock hours of training),
    - ``processes`` (of the last attempt; a run resumes only with as many) and ``steps`` (done),
    - ``memory_mb``: the largest peak GPU memory one process allocated in an attempt (MiB; Table 4),
      absent when no attempt ran on a GPU.

    Seconds are those of the training loop up to the checkpoint (model loading and the evaluation
    hook excluded; the work an attempt did after its last checkpoint is redone and counted then).
    """
    attempts = state.get("attempts", [])
    seconds = [float(a["seconds"]) for a in attempts]
    memory = [float(a["peak_memory_gb"]) * 1024 for a in attempts if "peak_memory_gb" in a]
    return {
        "gpu_days": sum(s * a["processes"] for s, a in zip(seconds, attempts)) / SECONDS_PER_DAY,
        "train_hours": sum(seconds) / 3600.0,
        "processes": int(state["processes"]),
        "steps": int(state["step"]),
        **({"memory_mb": max(memory)} if memory else {}),
    }
