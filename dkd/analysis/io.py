"""Loading state dicts without building models, and writing the weight analysis (CSV, JSON, PNG).

A source is a local diffusers model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``
or its sharded index, or a pipeline folder with a ``unet``/``transformer`` subfolder), a single
``.safetensors`` (or ``.bin``/``.pt``/``.pth``) file, or a hub id ``owner/name`` resolved with
``huggingface_hub`` only when no such local path exists (``HF_HUB_OFFLINE`` set: cache only).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_write_text

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = f"{WEIGHTS_NAME}.index.json"
BIN_NAME = "diffusion_pytorch_model.bin"
CONFIG_NAME = "config.json"
MODEL_SUBFOLDERS = ("unet", "transformer")
TORCH_SUFFIXES = (".bin", ".pt", ".pth")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _folder_weights(folder: Path) -> list[Path] | None:
    if (folder / INDEX_NAME).is_file():
        shards = json.loads((folder / INDEX_NAME).read_text())["weight_map"].values()
        return [folder / name for name in sorted(set(shards))]
    for name in (WEIGHTS_NAME, BIN_NAME):
        if (folder / name).is_file():
            return [folder / name]
    return None


def _local_files(path: Path, subfolder: str | None, source: str) -> tuple[list[Path], Path | None]:
    if path.is_file():
        if path.suffix != ".safetensors" and path.suffix not in TORCH_SUFFIXES:
            raise ValueError(f"{source!r} is a file but not .safetensors/.bin/.pt/.pth weights")
        config = path.parent / CONFIG_NAME
        return [path], config if config.is_file() else None
    folders = [path / subfolder] if subfolder else [path, *(path / name for name in MODEL_SUBFOLDERS)]
    for folder in folders:
        weights = _folder_weights(folder)
        if weights is not None:
            config = folder / CONFIG_NAME
            return weights, config if config.is_file() else None
    tried = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"no {WEIGHTS_NAME} (or its index, or {BIN_NAME}) for {source!r}; looked in: {tried}")


def _hub_snapshot(repo_id: str, subfolder: str | None) -> Path:
    from huggingface_hub import snapshot_download

    prefixes = [subfolder] if subfolder else ["", *MODEL_SUBFOLDERS]
    names = (CONFIG_NAME, WEIGHTS_NAME, INDEX_NAME, "diffusion_pytorch_model-*.safetensors")
    patterns = [f"{prefix}/{name}" if prefix else name for prefix in prefixes for name in names]
    offline = _offline()
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline))
    except Exception as error:  # noqa: BLE001 - one clear error whatever the hub client raises
        where = "in the local hub cache (HF_HUB_OFFLINE is set)" if offline else "on the Hugging Face hub"
        raise FileNotFoundError(
            f"{repo_id!r} is not a local file or folder, and could not be found {where}: {error}"
        ) from error


def model_files(source: str | os.PathLike, subfolder: str | None = None) -> tuple[list[Path], Path | None]:
    """The weight file(s) of ``source`` and its ``config.json`` (None when there is none)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return _local_files(path, subfolder, text)
    if HUB_ID.match(text):
        return _local_files(_hub_snapshot(text, subfolder), subfolder, text)
    raise FileNotFoundError(f"no model at {text!r}: no such file or folder (and not a hub id owner/name)")


def natural_key(name: str) -> list:
    """Sort key reading the digit runs of a name as numbers (``blocks.2`` before ``blocks.10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_state_dict(source: str | os.PathLike, subfolder: str | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a model's weights on the CPU, in their stored dtype; the model is not built.

    Safetensors files do not keep the module order, so the keys come in natural order
    (:func:`natural_key`): the "layer index" of the per-layer plot follows it.
    """
    state: dict[str, torch.Tensor] = {}
    for file in model_files(source, subfolder)[0]:
        if file.suffix == ".safetensors":
            part = load_file(file, device="cpu")
        else:
            part = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise ValueError(f"{file} does not hold a flat state dict of tensors")
        state.update(part)
    return {name: state[name] for name in sorted(state, key=natural_key)}


def _json_ready(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


def summary_json(summary: dict) -> str:
    """The summary as strict JSON (NaN written as null)."""
    return json.dumps(_json_ready(summary), indent=2) + "\n"


def plot_layers(frame: pd.DataFrame, path: str | os.PathLike, title: str | None = None) -> Path:
    """Fig. 2(a): norm and direction change (mean +- STD over output neurons, %) per layer index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    index = range(len(frame))
    fig, ax = plt.subplots(figsize=(max(6.0, len(frame) * 0.08), 3.5))
    for prefix, label in (("norm", "norm change"), ("direction", "direction change")):
        mean, std = 100 * frame[f"{prefix}_mean"], 100 * frame[f"{prefix}_std"]
        ax.plot(index, mean, marker=".", linewidth=1, label=label)
        ax.fill_between(index, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("layer index")
    ax.set_ylabel("change (%)")
    ax.set_title(title or "per-layer change, mean +- STD over output neurons (Eq. 14-17)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", dpi=150)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def write_analysis(frame: pd.DataFrame, summary: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``weights.csv`` (per layer, fractions), ``summary.json`` and ``weights.png``, each atomically."""
    out = Path(out_dir)
    return {
        "csv": atomic_write_text(out / "weights.csv", frame.to_csv(index=False)),
        "json": atomic_write_text(out / "summary.json", summary_json(summary)),
        "png": plot_layers(frame, out / "weights.png"),
    }


def save_model_folder(state: dict[str, torch.Tensor], config: Path, folder: str | os.PathLike) -> Path:
    """A diffusers-loadable folder: a copy of ``config`` and the weights as one safetensors file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_NAME, Path(config).read_text(encoding="utf-8"))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"format": "pt"})
        os.replace(tmp, folder / WEIGHTS_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / WEIGHTS_NAME
