"""Loading state dicts without building models, and writing the weight analysis (CSV, JSON, PNG).

A source is a local diffusers model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``
or its sharded index, or a pipeline folder with a ``unet``/``transformer`` subfolder), a single
``.safetensors`` (or ``.bin``/``.pt``/``.pth``) file, or a hub id ``owner/name`` resolved with
``huggingface_hub`` only when no such local path exists (``HF_HUB_OFFLINE`` set: cache only), at
``revision`` (a commit, branch or tag; None: ``main``). :func:`hub_commit` reads the commit a hub
file was resolved to from its cache path, for the provenance of a result.
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
SNAPSHOT = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]")


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


def folder_patterns(subfolder: str | None, weights: tuple[str, ...] = (WEIGHTS_NAME, INDEX_NAME)) -> list[str]:
    """The files of a diffusers model folder in a hub repo (its config and ``weights``: by default the
    safetensors, single or sharded): in ``subfolder``, or (None) at the root or in ``unet``/``transformer``."""
    prefixes = [subfolder] if subfolder else ["", *MODEL_SUBFOLDERS]
    names = (CONFIG_NAME, *weights) + (("diffusion_pytorch_model-*.safetensors",) if INDEX_NAME in weights else ())
    return [f"{prefix}/{name}" if prefix else name for prefix in prefixes for name in names]


def _hub_error(repo_id: str, what: str, error: Exception) -> FileNotFoundError:
    where = "in the local hub cache (HF_HUB_OFFLINE is set)" if _offline() else "on the Hugging Face hub"
    return FileNotFoundError(f"{what} of {repo_id!r} could not be found {where}: {type(error).__name__}: {error}")


def _hub_snapshot(repo_id: str, subfolder: str | None, revision: str | None) -> Path:
    """The cached snapshot of a model folder: its safetensors, or, in a repo that has none, its ``.bin``."""
    from huggingface_hub import snapshot_download

    def snapshot(weights):
        patterns = folder_patterns(subfolder, weights)
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=_offline()))

    where = f"the model folder {subfolder or '(root)'!r} at revision {revision or 'main'}"
    try:
        folder = snapshot((WEIGHTS_NAME, INDEX_NAME))
        folders = [folder / subfolder] if subfolder else [folder, *(folder / name for name in MODEL_SUBFOLDERS)]
        if any(_folder_weights(f) for f in folders):
            return folder
        return snapshot((BIN_NAME,))
    except Exception as error:  # noqa: BLE001 - one clear error whatever the hub client raises
        raise _hub_error(repo_id, where, error) from error


def hub_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """One file of a hub repo (or of a local folder ``repo_id``), from the cache when offline."""
    folder = Path(repo_id).expanduser()
    if folder.is_dir():
        if not (folder / filename).is_file():
            raise FileNotFoundError(f"no {filename!r} in {folder}")
        return folder / filename
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=_offline()))
    except Exception as error:  # noqa: BLE001 - one clear error whatever the hub client raises
        raise _hub_error(repo_id, f"the file {filename!r} at revision {revision or 'main'}", error) from error


def hub_commit(path: str | os.PathLike) -> str | None:
    """The commit a file of the Hugging Face cache belongs to (``.../snapshots/<sha>/...``); None for
    a file outside the cache (a local folder)."""
    found = SNAPSHOT.search(str(path))
    return found.group(1) if found else None


def model_files(
    source: str | os.PathLike, subfolder: str | None = None, revision: str | None = None
) -> tuple[list[Path], Path | None]:
    """The weight file(s) of ``source`` and its ``config.json`` (None when there is none)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return _local_files(path, subfolder, text)
    if HUB_ID.match(text):
        return _local_files(_hub_snapshot(text, subfolder, revision), subfolder, text)
    raise FileNotFoundError(f"no model at {text!r}: no such file or folder (and not a hub id owner/name)")


def natural_key(name: str) -> list:
    """Sort key reading the digit runs of a name as numbers (``blocks.2`` before ``blocks.10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_state_dict(
    source: str | os.PathLike, subfolder: str | None = None, revision: str | None = None
) -> dict[str, torch.Tensor]:
    """All tensors of a model's weights on the CPU, in their stored dtype; the model is not built.

    Safetensors files do not keep the module order, so the keys come in natural order
    (:func:`natural_key`): the "layer index" of the per-layer plot follows it.
    """
    state: dict[str, torch.Tensor] = {}
    for file in model_files(source, subfolder, revision)[0]:
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


def _figure(width: float, height: float = 3.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _save_figure(plt, fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, written atomically; the figure is closed."""
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


def plot_layers(frame: pd.DataFrame, path: str | os.PathLike, title: str | None = None) -> Path:
    """Fig. 2(a): norm and direction change (mean +- STD over output neurons, %) per layer index."""
    plt, fig, ax = _figure(max(6.0, len(frame) * 0.08))
    index = range(len(frame))
    for prefix, label in (("norm", "norm change"), ("direction", "direction change")):
        mean, std = 100 * frame[f"{prefix}_mean"], 100 * frame[f"{prefix}_std"]
        ax.plot(index, mean, marker=".", linewidth=1, label=label)
        ax.fill_between(index, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("layer index")
    ax.set_ylabel("change (%)")
    ax.set_title(title or "per-layer change, mean +- STD over output neurons (Eq. 14-17)")
    ax.legend()
    return _save_figure(plt, fig, Path(path))


def plot_energy(curves: pd.DataFrame, path: str | os.PathLike, title: str | None = None) -> Path:
    """Fig. 2(b): share of the direction residual's energy kept against the share of its rank kept,
    the mean over layers with the band of their 10th-90th percentiles; the 30% mark of section 1."""
    plt, fig, ax = _figure(5.0, 3.5)
    if len(curves):
        by_fraction = curves.groupby("rank_fraction")["energy"]
        fractions = 100 * by_fraction.mean().index.to_numpy()
        mean = 100 * by_fraction.mean().to_numpy()
        ax.plot(fractions, mean, label=f"mean over {curves['name'].nunique()} layers")
        ax.fill_between(
            fractions,
            100 * by_fraction.quantile(0.1).to_numpy(),
            100 * by_fraction.quantile(0.9).to_numpy(),
            alpha=0.25,
        )
        at_30 = float(curves.loc[(curves["rank_fraction"] - 0.3).abs() < 1e-9, "energy"].mean())
        ax.axvline(30, color="gray", linestyle=":", linewidth=1)
        ax.annotate(f"{100 * at_30:.1f}% at 30%", (30, 100 * at_30), textcoords="offset points", xytext=(6, -12))
        ax.legend(loc="lower right")
    ax.set_xlabel("rank kept (% of full rank)")
    ax.set_ylabel("energy kept (%)")
    ax.set_title(title or "SVD of the direction residual: energy kept against rank")
    return _save_figure(plt, fig, Path(path))


def write_analysis(
    frame: pd.DataFrame, summary: dict, out_dir: str | os.PathLike, curves: pd.DataFrame | None = None
) -> dict[str, Path]:
    """``weights.csv`` (per layer, fractions), ``summary.json`` and ``weights.png`` (Fig. 2a), and with
    ``curves`` also ``energy.csv`` and ``energy.png`` (Fig. 2b); each written atomically."""
    out = Path(out_dir)
    written = {
        "csv": atomic_write_text(out / "weights.csv", frame.to_csv(index=False)),
        "json": atomic_write_text(out / "summary.json", summary_json(summary)),
        "png": plot_layers(frame, out / "weights.png"),
    }
    if curves is not None:
        written["energy_csv"] = atomic_write_text(out / "energy.csv", curves.to_csv(index=False))
        written["energy_png"] = plot_energy(curves, out / "energy.png")
    return written


def result_values(summary: dict) -> dict[str, float]:
    """The values of a ``weights.json`` result (the report's metric names) from :func:`summarize`'s
    summary; a value that is not finite (no usable row, a zero norm change) is left out."""
    names = {
        "norm_mean_pct": "norm_mean_pct",
        "dir_mean_pct": "direction_mean_pct",
        "norm_std_pct": "norm_std_pct",
        "dir_std_pct": "direction_std_pct",
        "energy_kept": "energy_at_30pct",
        "rank_fraction_90pct": "rank_fraction_90pct",
        "dir_norm_mean_ratio": "direction_to_norm_mean",
        "dir_norm_std_ratio": "direction_to_norm_std",
    }
    values = {metric: summary[key] for metric, key in names.items()}
    return {metric: float(value) for metric, value in values.items() if math.isfinite(value)}


def write_weights_result(
    path: str | os.PathLike, *, backbone: str, model: str, summary: dict, provenance: dict
) -> dict:
    """The result file ``weights.json`` of one analysed model (:func:`result_values` of ``summary``, and
    the number of layers used besides ``provenance``); returns its values."""
    from ..report.results import write_result

    values = result_values(summary)
    provenance = {**provenance, "layers": summary["layers_used"]}
    write_result(path, backbone=backbone, model=model, evalset=None, values=values, provenance=provenance)
    return values


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
