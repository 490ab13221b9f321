"""Fig. 16: curves over seeds summarised (against numpy by hand), drawn with a band, written as CSV."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from PIL import Image

from dkd.report.curves import curve_summaries, plot_curves, summarise_curves, write_curve_summary

STEPS = [0, 10, 20]
# three seeds of one run: fid and digit_prob at steps 0, 10, 20
FID = [[90.0, 60.0, 40.0], [80.0, 66.0, 37.0], [100.0, 57.0, 43.0]]
PROB = [[0.10, 0.50, 0.80], [0.20, 0.40, 0.90], [0.30, 0.45, 0.70]]


def _seeds() -> list[pd.DataFrame]:
    return [pd.DataFrame({"step": STEPS, "fid": fid, "digit_prob": prob}) for fid, prob in zip(FID, PROB)]


def test_summarise_curves_matches_numpy_by_hand():
    summary = summarise_curves(_seeds())
    assert list(summary.columns) == [
        "step",
        *(f"{m}_{s}" for m in ("fid", "digit_prob") for s in ("mean", "se", "min", "max")),
        "n",
    ]
    assert summary["step"].tolist() == STEPS and summary["n"].tolist() == [3, 3, 3]
    # step 10 of fid by hand: 60, 66, 57 -> mean 61, deviations -1, 5, -4, sum of squares 42, ddof=1 variance 21
    assert summary.loc[1, "fid_mean"] == pytest.approx(61.0)
    assert summary.loc[1, "fid_se"] == pytest.approx(math.sqrt(21.0) / math.sqrt(3.0))
    assert (summary.loc[1, "fid_min"], summary.loc[1, "fid_max"]) == (57.0, 66.0)
    for name, values in (("fid", np.array(FID)), ("digit_prob", np.array(PROB))):
        mean = values.sum(axis=0) / 3
        se = np.sqrt(((values - mean) ** 2).sum(axis=0) / 2) / np.sqrt(3)
        np.testing.assert_allclose(summary[f"{name}_mean"], mean)
        np.testing.assert_allclose(summary[f"{name}_se"], se)
        np.testing.assert_array_equal(summary[f"{name}_min"], values.min(axis=0))
        np.testing.assert_array_equal(summary[f"{name}_max"], values.max(axis=0))


def test_summarise_one_curve_has_no_standard_error():
    summary = summarise_curves(_seeds()[:1])
    assert summary["fid_mean"].tolist() == FID[0] == summary["fid_min"].tolist() == summary["fid_max"].tolist()
    assert summary["fid_se"].isna().all() and summary["n"].tolist() == [1, 1, 1]


def test_summarise_curves_rejects_mismatched_steps_and_metrics():
    curves = _seeds()
    curves[2] = curves[2].assign(step=[0, 10, 30])
    with pytest.raises(ValueError, match=r"steps of curve 2 differ.*extra steps \[30\], missing steps \[20\]"):
        summarise_curves(curves)
    with pytest.raises(ValueError, match="curve 1 has the metrics"):
        summarise_curves([_seeds()[0], _seeds()[1].drop(columns="digit_prob")])
    with pytest.raises(ValueError, match="no curves"):
        summarise_curves([])


def test_plot_curves_draws_a_band_for_a_seeded_run_only(tmp_path):
    single = pd.DataFrame({"step": STEPS, "fid": [70.0, 50.0, 30.0], "digit_prob": [0.2, 0.6, 0.9]})
    seen = {}

    def inspect(fig):
        seen["axes"] = fig.axes
        seen["labels"] = fig.axes[0].get_legend_handles_labels()[1]

    out = plot_curves(
        {"toy/seeded": _seeds(), "toy/single": single, "toy/one-seed": [single]},
        ["fid", "digit_prob"],
        tmp_path / "fig16.png",
        on_figure=inspect,
    )
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (int(2 * 4.5 * 120), int(3.5 * 120))
    assert seen["labels"] == ["toy/seeded (mean, band: range over 3 seeds)", "toy/single", "toy/one-seed"]
    for axis, name in zip(seen["axes"], ("fid", "digit_prob")):
        bands = [c for c in axis.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 1  # only the seeded run has a band
        # the band spans min..max over the seeds at every step
        vertices = bands[0].get_paths()[0].vertices
        values = np.array(FID if name == "fid" else PROB)
        for i, step in enumerate(STEPS):
            at = vertices[np.isclose(vertices[:, 0], step), 1]
            assert at.min() == pytest.approx(values[:, i].min()) and at.max() == pytest.approx(values[:, i].max())
        seeded_line = axis.get_lines()[0]
        np.testing.assert_allclose(seeded_line.get_ydata(), values.mean(axis=0))
        np.testing.assert_array_equal(axis.get_lines()[1].get_ydata(), single[name])


def test_write_curve_summary_csv_equals_the_summaries(tmp_path):
    single = pd.DataFrame({"step": [0, 10], "fid": [70.0, 50.0]})  # no digit_prob: empty there
    curves = {"toy/seeded": _seeds(), "toy/single": single}
    out = write_curve_summary(curves, tmp_path / "out" / "fig16.csv")
    table = pd.read_csv(out)
    assert list(table.columns) == list(curve_summaries(curves).columns)
    assert list(table.columns[:2]) == ["label", "step"] and table.columns[-1] == "n"
    assert table["label"].tolist() == ["toy/seeded"] * 3 + ["toy/single"] * 2
    seeded = table[table["label"] == "toy/seeded"].drop(columns="label").reset_index(drop=True)
    pd.testing.assert_frame_equal(seeded, summarise_curves(_seeds()), check_dtype=False)
    alone = table[table["label"] == "toy/single"].reset_index(drop=True)
    assert alone["fid_mean"].tolist() == [70.0, 50.0] and alone["fid_se"].isna().all()
    assert alone["digit_prob_mean"].isna().all() and alone["n"].tolist() == [1, 1]
    assert [p.name for p in out.parent.iterdir()] == ["fig16.csv"]  # no temporary file left
