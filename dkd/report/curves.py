"""Fig. 16: metrics of the one-step students over training (the evaluation hook's ``curve.csv``).

A run trained with several seeds (``distill.seeds``) has one curve per seed; :func:`summarise_curves`
reduces them to one wide frame per run (columns ``step``, ``<metric>_mean``, ``<metric>_se``,
``<metric>_min``, ``<metric>_max`` for each metric, then ``n``), :func:`plot_curves` draws its mean
with a band over the range of the seeds and :func:`write_curve_summary` writes the numbers behind the
figure (``label`` + the summary's columns) as one CSV.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_open
from .formats import metric_format


def read_curve(path: str | os.PathLike) -> pd.DataFrame:
    """A run's ``curve.csv`` (``step`` and one column per metric); one clear error when it has no rows."""
    frame = pd.read_csv(path)
    if "step" not in frame.columns or frame.empty:
        raise ValueError(f"{path}: no evaluation rows (was the run trained with distill.curves / eval_every?).")
    return frame


def summarise_curves(curves: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The curves of one run over its seeds, reduced per step and metric.

    Every curve must have the same ``step`` column (same values, same order) and the same metric
    columns. Returns one row per step with the columns ``step``, then for each metric (in the first
    curve's column order) ``<metric>_mean``, ``<metric>_se`` (sample standard deviation with
    ddof=1 over sqrt(n); NaN for a single curve), ``<metric>_min``, ``<metric>_max``, and last ``n``
    (the number of curves). A NaN in a curve makes that step's statistics NaN.
    """
    curves = list(curves)
    if not curves:
        raise ValueError("summarise_curves: no curves to summarise.")
    first = curves[0]
    if "step" not in first.columns:
        raise ValueError("summarise_curves: curve 0 has no 'step' column.")
    steps = first["step"].to_numpy()
    metrics = [column for column in first.columns if column != "step"]
    for i, frame in enumerate(curves[1:], start=1):
        if "step" not in frame.columns:
            raise ValueError(f"summarise_curves: curve {i} has no 'step' column.")
        if sorted(c for c in frame.columns if c != "step") != sorted(metrics):
            raise ValueError(
                f"summarise_curves: curve {i} has the metrics {sorted(c for c in frame.columns if c != 'step')}, "
                f"curve 0 has {sorted(metrics)}."
            )
        other = frame["step"].to_numpy()
        if not np.array_equal(other, steps):
            extra = sorted(set(other.tolist()) - set(steps.tolist()))
            missing = sorted(set(steps.tolist()) - set(other.tolist()))
            what = (
                f"extra steps {extra}, missing steps {missing}"
                if extra or missing
                else f"the same steps in another order or count ({other.tolist()} vs {steps.tolist()})"
            )
            raise ValueError(f"summarise_curves: the steps of curve {i} differ from curve 0's: {what}.")
    n = len(curves)
    summary = {"step": steps}
    for metric in metrics:
        values = np.stack([frame[metric].to_numpy(dtype=float) for frame in curves])  # (n, steps)
        summary[f"{metric}_mean"] = values.mean(axis=0)
        summary[f"{metric}_se"] = values.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(steps), np.nan)
        summary[f"{metric}_min"] = values.min(axis=0)
        summary[f"{metric}_max"] = values.max(axis=0)
    summary["n"] = np.full(len(steps), n, dtype=int)
    return pd.DataFrame(summary)


def _seed_curves(curves: pd.DataFrame | Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """A label's curves as a list (one frame: a run with one seed)."""
    return [curves] if isinstance(curves, pd.DataFrame) else list(curves)


def curve_summaries(curves: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]]) -> pd.DataFrame:
    """:func:`summarise_curves` of every label, stacked: the column ``label``, then the summary's
    (a metric missing from a label's curves is empty in its rows)."""
    frames = [summarise_curves(_seed_curves(frames)).assign(label=label) for label, frames in curves.items()]
    if not frames:
        raise ValueError("curve_summaries: no curves.")
    table = pd.concat(frames, ignore_index=True)
    stats = [c for c in table.columns if c not in ("label", "step", "n")]
    return table[["label", "step", *stats, "n"]]


def write_curve_summary(curves: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]], out: str | os.PathLike) -> Path:
    """Write :func:`curve_summaries` atomically as CSV (NaN as an empty field): Fig. 16's numbers."""
    table = curve_summaries(curves)
    with atomic_open(out, "w") as handle:
        table.to_csv(handle, index=False)
    return Path(out)


def plot_curves(
    curves: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]],
    metrics: Sequence[str],
    out: str | os.PathLike,
    *,
    title: str = "Convergence",
    on_figure: Callable | None = None,
) -> Path:
    """One panel per metric, one line per run (label -> curve, or its curves over seeds), written
    atomically as PNG.

    A label with one curve is drawn as its line; a label with several (one per seed) as the mean of
    :func:`summarise_curves` with a shaded band from the min to the max over the seeds, its legend
    entry saying so. ``on_figure(fig)`` is called before the figure is saved (e.g. to inspect it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeded = {label: _seed_curves(frames) for label, frames in curves.items()}
    summaries = {label: summarise_curves(frames) for label, frames in seeded.items() if len(frames) != 1}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for label, frames in seeded.items():
            if label not in summaries:
                frame = frames[0]
                if metric in frame.columns:
                    axis.plot(frame["step"], frame[metric], marker="o", markersize=3, label=label)
                continue
            summary = summaries[label]
            if f"{metric}_mean" not in summary.columns:
                continue
            n = int(summary["n"].iloc[0])
            (line,) = axis.plot(
                summary["step"],
                summary[f"{metric}_mean"],
                marker="o",
                markersize=3,
                label=f"{label} (mean, band: range over {n} seeds)",
            )
            axis.fill_between(
                summary["step"], summary[f"{metric}_min"], summary[f"{metric}_max"], color=line.get_color(), alpha=0.2
            )
        axis.set_xlabel("generator updates")
        axis.set_ylabel(metric_format(metric).header)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    if on_figure is not None:
        on_figure(fig)
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return Path(out)
