"""Fig. 16: metrics of the one-step students over training (the evaluation hook's ``curve.csv``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..io import atomic_open
from .formats import metric_format


def read_curve(path: str | os.PathLike) -> pd.DataFrame:
    """A run's ``curve.csv`` (``step`` and one column per metric); one clear error when it has no rows."""
    frame = pd.read_csv(path)
    if "step" not in frame.columns or frame.empty:
        raise ValueError(f"{path}: no evaluation rows (was the run trained with distill.curves / eval_every?).")
    return frame


def plot_curves(
    curves: Mapping[str, pd.DataFrame], metrics: Sequence[str], out: str | os.PathLike, *, title: str = "Convergence"
) -> Path:
    """One panel per metric, one line per run (label -> curve), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for label, frame in curves.items():
            if metric in frame.columns:
                axis.plot(frame["step"], frame[metric], marker="o", markersize=3, label=label)
        axis.set_xlabel("training step")
        axis.set_ylabel(metric_format(metric).header)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return Path(out)
