"""The report over seeds: means and standard errors against numpy, non-finite seeds, the "mean ± SE"
cells, the seed table and the rendered rule; with one seed the report is the one of before
(test_seed_claims.py: the decision rule and every claim kind over seeds)."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from dkd.report import TableSpec, build_table, render_report, render_table
from dkd.report.claims import check_claim, check_claims
from dkd.report.results import RESULT_COLUMNS
from dkd.report.seeds import (
    DECISION_LEVEL,
    decision_rule,
    format_mean,
    seed_table,
    summarise_seeds,
)

ROOT = Path(__file__).resolve().parents[2]

A, B, C = "lorad-s8-f4-linear-zero", "lora-s8-f4-linear-zero", "dora-s8-f4-linear-zero"
S2, S4, S16, S32 = (f"lorad-s{r}-f4-linear-zero" for r in (2, 4, 16, 32))
FT = "ft-sfull-fft-linear-zero"
P, Q, M = "lorad-s8-f2-linear-zero", "lorad-s8-f8-linear-zero", "lorad-s8-f4-linear-xavier"
SEEDS = {  # (model, metric) -> the value of seed 0, 1, 2 (a fourth, seed 3, lies beyond seeds = 3)
    (A, "fid"): [10.0, 10.5, 11.0, 99.0],
    (B, "fid"): [20.0, 21.0, 22.0],
    (C, "fid"): [9.0, 12.0, 15.0],
    (S2, "fid"): [20.0, 21.0, 22.0],
    (A, "fid_low"): [9.5, 10.1, 10.2],
    (A, "fid_high"): [10.6, 11.2, 11.9],
    (S4, "fid"): [15.0, 16.0, 17.0],
    (S16, "fid"): [18.0, 19.0, 20.0],
    (S32, "fid"): [10.0, 16.0, 22.0],
    (Q, "fid"): [10.0, 14.0, 18.0],  # a large seed effect, shared by P:
    (P, "fid"): [11.0, 15.1, 18.9],  # Q + (1, 1.1, 0.9)
    (M, "fid"): [16.0, 16.0, 16.0],
    (FT, "dir_mean_pct"): [2.2, 2.0, 2.4],
    (FT, "norm_mean_pct"): [0.1, 0.11, 0.1],
    (A, "generator_updates"): [400, 400, 400],  # the same at every seed
}
LEVEL = {"dir_mean_pct", "norm_mean_pct", "generator_updates"}  # model-level metrics: evalset None


def _name(model: str, k: int) -> str:
    return model if k == 0 else f"{model}-seed{k}"


def _raw() -> pd.DataFrame:
    rows = [
        ("toy", _name(model, k), None if metric in LEVEL else "eval", metric, value, f"r/{_name(model, k)}.json")
        for (model, metric), values in SEEDS.items()
        for k, value in enumerate(values)
    ]
    rows += [("toy", "teacher", "eval", "fid", 8, "r/teacher.json"), ("toy", A, None, "type", "U-Net", "r/a.json")]
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS), dtype=object)


SUMMARY = summarise_seeds(_raw(), 3)


def _row(frame, model, metric):
    (index,) = frame.index[(frame["model"] == model) & (frame["metric"] == metric)]
    return frame.loc[index]


def claim(results=SUMMARY, **spec):
    return check_claim({"claim": "c", "backbone": "toy", "evalset": "eval", **spec}, results, level=0.95)


def test_summarise_seeds_matches_numpy():
    for (model, metric), values in SEEDS.items():
        row, kept = _row(SUMMARY, model, metric), np.array(values[:3], dtype=np.float64)
        assert row["n"] == 3 and row["seed_ids"] == (0, 1, 2) and row["seed_values"] == tuple(values[:3])
        assert row["value"] == pytest.approx(np.mean(kept), rel=1e-12)
        assert row["se"] == pytest.approx(np.std(kept, ddof=1) / np.sqrt(3), rel=1e-12)
        assert row["source"] == "; ".join(f"r/{_name(model, k)}.json" for k in range(3))  # no seed 3 (99.0)
    # hand-computed: 10, 10.5, 11 -> mean 10.5, std 0.5, se 0.5 / √3
    assert _row(SUMMARY, A, "fid")["se"] == pytest.approx(0.5 / math.sqrt(3))
    teacher, text = _row(SUMMARY, "teacher", "fid"), _row(SUMMARY, A, "type")
    assert (teacher["value"], teacher["n"], teacher["source"]) == (8, 1, "r/teacher.json") and math.isnan(teacher["se"])
    assert (text["value"], text["n"], text["evalset"]) == ("U-Net", 1, None)
    assert not SUMMARY["model"].str.contains("seed").any()


def test_one_seed_is_the_input():
    raw = _raw()
    plain = raw[~raw["model"].str.contains("-seed")].reset_index(drop=True)
    one = summarise_seeds(raw, 1)
    assert one[list(RESULT_COLUMNS)].equals(plain)
    assert (one["n"] == 1).all() and one["se"].isna().all()


def test_bad_input_to_summarise_is_one_clear_error():
    raw = _raw()
    text = pd.concat([raw, raw.iloc[:1].assign(model=f"{B}-seed3", value="n/a")], ignore_index=True)
    summarise_seeds(text, 3)  # the text seed lies beyond seeds = 3
    with pytest.raises(ValueError, match=f"'fid' of '{B}' .* is text in some of its 4 seeds"):
        summarise_seeds(text, 4)
    with pytest.raises(ValueError, match="seeds must be a whole number >= 1"):
        summarise_seeds(raw, 0)
    with pytest.raises(ValueError, match="twice"):
        summarise_seeds(pd.concat([raw, raw.iloc[:1]]), 3)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['source'\]"):
        summarise_seeds(raw.drop(columns="source"), 3)


TABLE = TableSpec.from_dict(
    "t",
    {
        "title": "T",
        "columns": ["fid"],
        "rows": [
            {"label": "LoRaD", "backbone": "toy", "model": A, "evalset": "eval"},
            {"label": "SD", "backbone": "toy", "model": "teacher", "evalset": "eval"},
        ],
    },
)


def test_table_cells_over_seeds():
    table = build_table(TABLE, SUMMARY)
    assert table.frame["FID"].tolist() == ["10.50 ± 0.29 [1]", "8.00"]  # 0.5 / √3 = 0.2887
    assert table.footnotes == ("mean ± standard error over 3 seeds",)
    assert f"r/{A}-seed2.json" in table.sources and f"r/{A}-seed3.json" not in table.sources
    raw = _raw()
    assert render_table(build_table(TABLE, summarise_seeds(raw, 1))) == render_table(build_table(TABLE, raw))


def test_seed_table_and_rendered_rule():
    seeds = seed_table(_raw(), 3)
    row = seeds.frame[seeds.frame["Model"] == A].iloc[0]
    assert row["Seed 0 [1]"] == "10.00 [9.50, 10.60]" and row["Seed 2"] == "11.00 [10.20, 11.90]"
    assert row["Mean ± SE [2]"] == "10.50 ± 0.29"
    assert seeds.frame["Model"].tolist() == [A, B, C, S2, S4, S16, S32, Q, P, M]  # every model with FID over seeds
    assert "(seeds 0–2; a result of seed 3 or later is not used)" in seeds.footnotes[1]
    assert seeds.frame.loc[seeds.frame["Model"] == M, "Mean ± SE [2]"].tolist() == ["16.00"]  # no spread
    assert seed_table(_raw(), 1) is None
    claims = check_claims(
        [
            {
                "claim": "LoRaD wins",
                "backbone": "toy",
                "evalset": "eval",
                "kind": "best",
                "metric": "fid",
                "winner": A,
                "others": [C],
            }
        ],
        SUMMARY,
    )
    report = render_report(
        [build_table(TABLE, SUMMARY)], title="R", intro="", claims=claims, seeds=3, level=0.95, seed_table=seeds
    )
    rule = (
        "A claim holds when the mean of its per-seed differences over 3 seeds (models paired by seed) favours it "
        "by more than t = 4.30 standard errors (Student's t, 95% two-sided, 2 degrees of freedom; Bonferroni over "
        "the interior models of an interior-best claim), does not hold when it goes against it by as much, and is "
        "not resolved otherwise."
    )
    assert f"{stats.t.ppf(0.975, 2):.2f}" == "4.30" and decision_rule(3, 0.95) == decision_rule(3) == rule
    assert f"## Claims\n\n{rule}\n\n| Claim | Verdict | Evidence |\n" in report
    assert f"{stats.t.ppf(0.975, 4):.2f}" == "2.78"  # the study's five seeds
    assert decision_rule(5, 0.95) == (
        "A claim holds when the mean of its per-seed differences over 5 seeds (models paired by seed) favours it "
        "by more than t = 2.78 standard errors (Student's t, 95% two-sided, 4 degrees of freedom; Bonferroni over "
        "the interior models of an interior-best claim), does not hold when it goes against it by as much, and is "
        "not resolved otherwise."
    )
    assert f"{stats.t.ppf(0.95, 1):.2f}" == "6.31"  # two seeds at 90%
    assert "t = 6.31 standard errors (Student's t, 90% two-sided, 1 degree of freedom;" in decision_rule(2, 0.9)
    assert "| LoRaD wins | not resolved | fid: " in report
    assert "## Every run over seeds" in report and render_table(seeds) in report
    with pytest.raises(ValueError, match="'verdict' must be one of"):
        render_report([], title="R", intro="", claims=[{**claims[0], "verdict": "holds"}], seeds=3)


def test_not_resolved_and_no_data_differ_with_one_seed():
    claims = [
        {"claim": "tie", "holds": None, "verdict": "not resolved", "evidence": "fid of x is nan: not resolved"},
        {"claim": "none", "holds": None, "verdict": "no data", "evidence": "no fid for y"},
        {"claim": "old", "holds": None, "evidence": "no fid for z"},  # without a verdict: no data
    ]
    report = render_report([], title="R", intro="", claims=claims)
    assert "| tie | not resolved | fid of x is nan: not resolved |" in report
    assert "| none | — | no fid for y |" in report and "| old | — | no fid for z |" in report


def test_a_non_finite_seed_gives_a_nan_mean_and_an_unresolved_claim():
    raw = _raw()
    for bad, shown in ((math.nan, "nan"), ("nan", "nan"), (math.inf, "inf"), ("-inf", "-inf")):
        diverged = raw.copy()
        index = diverged.index[diverged["model"] == f"{A}-seed1"][0]  # A's fid at seed 1 (its first row)
        assert diverged.at[index, "metric"] == "fid"
        diverged.at[index, "value"] = bad
        summary = summarise_seeds(diverged, 3)  # no "is text"
        row = _row(summary, A, "fid")
        assert row["n"] == 3 and (math.isnan(row["value"]) if shown == "nan" else row["value"] == float(shown))
        assert math.isnan(row["se"]) and build_table(TABLE, summary).frame["FID"].tolist()[0] == f"{shown} [1]"
        for spec in (
            {"kind": "best", "metric": "fid", "winner": A, "others": [B]},
            {"kind": "relative", "model": A, "reference": "teacher", "metric": "fid", "factor": 1.5},
            {"kind": "threshold", "model": A, "metric": "fid", "maximum": 12},
        ):
            result = claim(summary, **spec)
            assert (result["verdict"], result["holds"]) == ("not resolved", None)
            assert f"fid of {A} at seed 1 is {float(shown)}: not resolved" in result["evidence"]
        # the other claims are untouched
        assert claim(summary, kind="best", metric="fid", winner=C, others=[B])["verdict"] == "holds"
    text = raw.copy()
    text.loc[text["model"] == f"{A}-seed1", "value"] = "diverged"
    with pytest.raises(ValueError, match=f"'fid' of '{A}' .* is text in some of its 3 seeds"):
        summarise_seeds(text, 3)


def test_a_value_every_seed_gives_is_shown_alone():
    spec = TableSpec.from_dict(
        "u",
        {
            "title": "U",
            "columns": ["generator_updates", "fid"],
            "rows": [{"label": "L", "backbone": "toy", "model": A, "evalset": "eval"}],
        },
    )
    table = build_table(spec, SUMMARY)
    assert table.frame["Generator updates"].tolist() == ["400"]  # not "400 ± 0", not footnoted as a mean
    assert table.frame["FID"].tolist() == ["10.50 ± 0.29 [1]"] and table.footnotes == (
        "mean ± standard error over 3 seeds",
    )
    assert format_mean(400.0, 0.0, 0) == "400" and format_mean(400.0, 1.0, 0) == "400 ± 1"


def test_the_default_level_is_one_number():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    decision = schema["properties"]["report"]["properties"]["decision"]
    assert decision["properties"]["level"]["default"] == DECISION_LEVEL == 0.95
    assert set(decision["properties"]) == {"level"}
    # the fallbacks of the rule's params and the HTML report's caption (a config validated without defaults)
    for path in ("workflow/rules/report.smk", "workflow/report/report.rst"):
        found = re.findall(r'get\("decision", \{\}\)\.get\("level", ([0-9.]+)\)', (ROOT / path).read_text())
        assert found and all(float(value) == DECISION_LEVEL for value in found), path
    for path in ("config/toy-study.yaml", ".test/config/toy-study.yaml"):
        assert yaml.safe_load((ROOT / path).read_text())["report"]["decision"] == {"level": 0.95}


def test_one_seed_report_is_the_old_one():
    """The report of one seed, byte for byte as it was rendered before seeds (a literal of that output)."""
    lora = "lora-s256-f32-linear-zero"
    lorad = "lorad-s256-f32-linear-zero"
    rows = [
        ("sd15", lorad, "coco2017", "fid", 21.123, "r/lorad.json"),
        ("sd15", lora, "coco2017", "fid", 24.5, "r/lora.json"),
        ("sd15", lorad, None, "trainable_M", 83.8, "r/lorad_model.json"),
    ]
    results = summarise_seeds(pd.DataFrame(rows, columns=list(RESULT_COLUMNS), dtype=object), 1)
    spec = TableSpec.from_dict(
        "t",
        {
            "title": "T",
            "columns": ["trainable_M", "fid"],
            "rows": [
                {"label": "LoRaD", "backbone": "sd15", "model": lorad, "evalset": "coco2017"},
                {"label": "LoRA", "backbone": "sd15", "model": lora, "evalset": "coco2017"},
            ],
        },
    )
    best = {"kind": "best", "backbone": "sd15", "evalset": "coco2017", "metric": "fid"}
    claims = check_claims(
        [
            {"claim": "LoRaD beats LoRA", **best, "winner": lorad, "others": [lora]},
            {"claim": "LoRA beats LoRaD", **best, "winner": lora, "others": [lorad]},
            {"claim": "DoRA", "kind": "threshold", "backbone": "sd15", "metric": "fid", "model": "dora", "maximum": 3},
        ],
        results,
    )
    assert [c["verdict"] for c in claims] == ["holds", "does not hold", "no data"]
    old = (
        "# R\n\nI.\n\n## T\n\n| Method   |   Trainable params (M) |   FID |\n|:---------|-----------------------:|"
        "------:|\n| LoRaD    |                  83.80 | 21.12 |\n| LoRA     |                  — [1] | 24.50 |\n\n"
        "- [1] no result file for backbone='sd15', model='lora-s256-f32-linear-zero', evalset=null (model-level "
        "value)\n\nSources:\n\n- `r/lora.json`\n- `r/lorad.json`\n- `r/lorad_model.json`\n\n## Claims\n\n"
        "| Claim | Holds | Evidence |\n|:--|:--:|:--|\n| LoRaD beats LoRA | yes | fid: lorad-s256-f32-linear-zero "
        "21.12 < lora-s256-f32-linear-zero 24.5 |\n| LoRA beats LoRaD | no | fid: lorad-s256-f32-linear-zero 21.12 "
        "< lora-s256-f32-linear-zero 24.5 |\n| DoRA | — | no fid for dora |\n"
    )
    report = render_report([build_table(spec, results)], title="R", intro="I.", claims=claims)
    assert report == old
    assert render_report([build_table(spec, results)], title="R", intro="I.", claims=claims, seed_table=None) == old
