"""How each metric is shown in the report: its header, decimals and caveat, and its values formatted.

:data:`METRICS` maps every metric name (as in config/paper/results.csv and our result files) to a
:class:`MetricFormat`; :func:`metric_format` looks one up (an unknown metric shows its own name).
:func:`format_value` and :func:`format_delta` print a value and the difference ours − paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .results import as_number


@dataclass(frozen=True)
class MetricFormat:
    """How a metric is shown: ``header`` text, ``decimals`` of our values and Δ (None: text, shown
    as is), whether it is a ``model_level`` value (looked up with evalset None), and a ``caveat``
    footnoted on every Δ of it (a value measured on other hardware than the paper's)."""

    header: str
    decimals: int | None = 3
    model_level: bool = False
    caveat: str | None = None


def _hps(style: str) -> MetricFormat:
    return MetricFormat(f"HPSv2 {style}", 2)


# The one mapping of metric names (as in config/paper/results.csv and our result files) to formats.
METRICS: Mapping[str, MetricFormat] = MappingProxyType(
    {
        "fid": MetricFormat("FID", 2),
        "fid_low": MetricFormat("FID low", 2),
        "fid_high": MetricFormat("FID high", 2),
        "clip": MetricFormat("CLIP", 3),
        "precision": MetricFormat("Precision", 3),
        "recall": MetricFormat("Recall", 3),
        "anime": _hps("Anime"),
        "concept_art": _hps("Concept-art"),
        "paintings": _hps("Paintings"),
        "photo": _hps("Photo"),
        "average": _hps("Average"),
        "delta_fid": MetricFormat("ΔFID", 2),
        "delta_clip": MetricFormat("ΔCLIP", 3),
        "delta_digit_prob": MetricFormat("ΔP(prompted digit)", 3),
        "trainable_M": MetricFormat("Trainable params (M)", 2, True),
        "params_M": MetricFormat("Params (M)", 2, True),
        "student_params_M": MetricFormat("Student params (M)", 2, True),
        "fake_params_M": MetricFormat("Fake params (M)", 2, True),
        "student_rank": MetricFormat("Student rank", 0, True),
        "fake_rank": MetricFormat("Fake rank", 0, True),
        "nfe": MetricFormat("NFE", 0, True),
        "generator_updates": MetricFormat("Generator updates", 0, True),
        "fake_updates": MetricFormat("Fake updates", 0, True),
        "norm_mean_pct": MetricFormat("Norm mean (%)", 2, True),
        "norm_std_pct": MetricFormat("Norm std (%)", 2, True),
        "dir_mean_pct": MetricFormat("Direction mean (%)", 2, True),
        "dir_std_pct": MetricFormat("Direction std (%)", 2, True),
        "energy_kept": MetricFormat("Energy kept", 3, True),
        "rank_fraction_90pct": MetricFormat("Rank fraction for 90% energy", 3, True),
        "dir_norm_mean_ratio": MetricFormat("Direction / norm (mean)", 1, True),
        "dir_norm_std_ratio": MetricFormat("Direction / norm (std)", 1, True),
        "digit_prob": MetricFormat("P(prompted digit)", 3),
        "digit_accuracy": MetricFormat("Digit accuracy", 3),
        "rank_fraction": MetricFormat("Rank fraction", 3, True),
        "inference_s": MetricFormat(
            "Inference (s)",
            3,
            True,
            "the paper timed on an NVIDIA A40 (appendix F.4); "
            "ours ran on the device named in timing.json: the difference is mostly hardware",
        ),
        "inference_time_reduction_pct": MetricFormat("Inference time reduction (%)", 2, True),
        "gpu_days": MetricFormat(
            "Training (GPU-days)",
            1,
            True,
            "the paper counts A100-days; ours are days of the "
            "devices named in train.json: the difference is partly hardware",
        ),
        "memory_mb": MetricFormat(
            "Memory (MB)",
            0,
            True,
            "ours: the peak GPU memory one training process allocated "
            "(MiB, train.json: per-GPU batch, precision and speed settings included); the paper "
            "does not say what its column counts (its LoRA figure is below the frozen fp16 U-Net)",
        ),
        "type": MetricFormat("Type", None, True),
        "image_free": MetricFormat("Image-free", None, True),
        "train_data": MetricFormat("Training data", None, True),
    }
)


def metric_format(metric: str) -> MetricFormat:
    """The format of ``metric``; an unknown metric shows its own name, 3 decimals, per evaluation set."""
    return METRICS.get(metric, MetricFormat(metric, 3, False))


def format_value(value, decimals: int | None) -> str:
    """``value`` with ``decimals`` decimals when it is a number and decimals is set; text as is."""
    number = as_number(value)
    if decimals is None or number is None or isinstance(value, str):
        return str(value)
    return f"{number:.{decimals}f}"


def format_delta(ours: float, paper: float, decimals: int | None) -> str:
    """Δ = ours − paper with an explicit sign, e.g. ``+1.25``."""
    return f"{ours - paper:+.{3 if decimals is None else decimals}f}"
