"""The parameter table: our trainable/total counts next to every count the paper prints.

The paper's numbers are transcribed once in ``config/paper/parameter_counts.csv`` (with the
table each comes from and the tolerance its printed precision allows); the counts are
computed on meta-device models built from the shipped configs, so no weights are needed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .adapters import AdapterSpec, count_parameters, count_trainable
from .backbones import build_denoiser, config_dir

COLUMNS = ["backbone", "role", "method", "rank", "layers", "trainable (M)", "paper (M)", "match", "source"]


def expected_counts_path() -> Path:
    return config_dir() / "paper" / "parameter_counts.csv"


def _count(row: pd.Series) -> int:
    if row["role"] == "total":
        return count_parameters(build_denoiser(row["backbone"], device="meta"), trainable_only=False)
    spec = AdapterSpec(
        backbone=row["backbone"],
        role=row["role"],
        method=row["method"],
        rank=int(row["rank"]) if row["rank"] else 256,
        layers=row["layers"] or "linear",
    )
    return count_trainable(spec)


def parameter_table(expected: Path | None = None) -> pd.DataFrame:
    """One row per paper count: ours (millions, 2 decimals), the paper's, and whether they match."""
    rows = pd.read_csv(expected or expected_counts_path(), dtype=str, keep_default_na=False)
    ours = rows.apply(_count, axis=1) / 1e6
    paper = rows["paper_M"].astype(float)
    table = rows.assign(
        **{
            "trainable (M)": ours.round(2),
            "paper (M)": paper,
            "match": ((ours - paper).abs() <= rows["tolerance_M"].astype(float) + 1e-9).map({True: "yes", False: "NO"}),
            "rank": rows["rank"].where(rows["rank"] != "", "-"),
            "layers": rows["layers"].where(rows["layers"] != "", "-"),
            "method": rows["method"].where(rows["method"] != "", "-"),
        }
    )
    return table[COLUMNS]


def to_markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, floatfmt=".2f")


def run_parameter_counts(student: AdapterSpec, fake: AdapterSpec) -> dict:
    """Millions of trainable parameters of a run's student and fake model, and its backbone's total
    (Tables 1, 2, 3 and 7), counted on meta-device models."""
    trainable = count_trainable(student) / 1e6
    return {
        "trainable_M": trainable,
        "student_params_M": trainable,
        "fake_params_M": count_trainable(fake) / 1e6,
        "params_M": count_parameters(build_denoiser(student.backbone, device="meta"), trainable_only=False) / 1e6,
    }
