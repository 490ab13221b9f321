"""Training checkpoints: trainable weights (safetensors), optimiser/scheduler/RNG state, step.

Layout: ``<root>/step-00000100/`` with ``<name>.safetensors`` per trained model (only its
trainable parameters), ``training_state.pt`` (optimisers, schedulers, and the random state of
every process) and ``state.json``. A checkpoint is written to ``step-XXXXXXXX.tmp`` and renamed into
place, so a job killed while saving leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

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
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
            and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(root: str | os.PathLike) -> Optional[Path]:
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
        raise ValueError(f"checkpoint does not match the model: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
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


def load_checkpoint(path: str | os.PathLike, names: list[str]) -> tuple[dict, dict, dict]:
    """``(weights per name, training_state, state)`` of the checkpoint at ``path``."""
    path = Path(path)
    weights = {name: load_file(str(path / f"{name}.safetensors")) for name in names}
    training_state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    return weights, training_state, json.loads((path / "state.json").read_text())
