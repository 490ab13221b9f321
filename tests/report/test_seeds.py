"""The report over seeds: means and standard errors against numpy, the decision rule on hand-computed
differences, every claim kind over seeds, the "mean ± SE" cells, the seed table and the rendered rule;
with one seed the report is the one of before."""

import math

import numpy as np
import pandas as pd
import pytest

from dkd.report import TableSpec, build_table, render_report, render_table
from dkd.report.claims import check_claim, check_claims
from dkd.report.results import RESULT_COLUMNS
from dkd.report.seeds import decide, decision_rule, difference_se, seed_table, summarise_seeds

A, B, C = "lorad-s8-f4-linear-zero", "lora-s8-f4-linear-zero", "dora-s8-f4-linear-zero"
S2, S4, S16, S32 = (f"lorad-s{r}-f4-linear-zero" for r in (2, 4, 16, 32))
FT = "ft-sfull-fft-linear-zero"
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
    (FT, "dir_mean_pct"): [2.2, 2.0, 2.4],
    (FT, "norm_mean_pct"): [0.1, 0.2, 0.1],
}
LEVEL = {"dir_mean_pct", "norm_mean_pct"}  # model-level metrics: evalset None


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


def test_decide_hand_computed():
    assert decide(5.0, 1.0, z=2.0) == "holds"  # 5 > 2 x 1: a clear win
    assert decide(0.5, 1.0, z=2.0) == "not resolved"  # |0.5| <= 2: a tie
    assert decide(-5.0, 1.0, z=2.0) == "does not hold"  # the reversed order
    assert decide(2.0, 1.0, z=2.0) == "not resolved"  # "by more than" z standard errors
    assert decide(0.5, 1.0, z=0.25) == "holds"
    for se in (math.nan, 0.0):  # one seed: the plain comparison
        assert [decide(d, se, z=2.0) for d in (0.1, -0.1, 0.0)] == ["holds", "does not hold", "not resolved"]
    with pytest.raises(ValueError, match="z must be a finite number > 0"):
        decide(1.0, 1.0, z=0)
    assert difference_se(3.0, 4.0) == 5.0 and difference_se(math.nan, 2.0) == 2.0 and difference_se(math.nan) == 0


def claim(**spec):
    return check_claim({"claim": "c", "backbone": "toy", "evalset": "eval", **spec}, SUMMARY, z=2.0)


def test_best_over_seeds():
    # LoRaD 10.5 ± 0.5/√3 against LoRA 21 ± 1/√3: difference 10.5, SE √(1/12 + 1/3) = 0.6455 -> holds
    win = claim(kind="best", metric="fid", winner=A, others=[B])
    assert (win["verdict"], win["holds"]) == ("holds", True)
    assert (
        win["evidence"] == f"fid: {A} 10.5 ± 0.2887 (n = 3) < {B} 21 ± 0.5774 (n = 3); {B} - {A} = 10.5 (2 SE = 1.291)"
    )
    # against DoRA 12 ± √3: difference 1.5, SE √(1/12 + 3) = 1.756, 2 SE = 3.51 -> a tie (seed 0 alone: DoRA 9 wins)
    tie = claim(kind="best", metric="fid", winner=A, others=[C])
    assert (tie["verdict"], tie["holds"]) == ("not resolved", None) and "(2 SE = 3.512)" in tie["evidence"]
    one = check_claim(
        {
            "claim": "c",
            "backbone": "toy",
            "evalset": "eval",
            "kind": "best",
            "metric": "fid",
            "winner": A,
            "others": [C],
        },
        summarise_seeds(_raw(), 1),
    )
    assert one["verdict"] == "does not hold" and one["evidence"] == f"fid: {C} 9 < {A} 10"
    lost = claim(kind="best", metric="fid", winner=B, others=[A])  # the reversed order: -10.5
    assert (lost["verdict"], lost["holds"]) == ("does not hold", False)
    assert claim(kind="best", metric="fid", winner=A, others=[B, C])["verdict"] == "not resolved"
    assert claim(kind="best", metric="fid", winner=B, others=[A, C])["verdict"] == "does not hold"
    missing = claim(kind="best", metric="fid", winner=A, others=["dora-s2-f4-linear-zero"])
    assert (missing["verdict"], missing["holds"]) == ("no data", None)


def test_interior_best_over_seeds():
    # s8 10.5 beats the ends s2 21 and s16 19 by 10.5 and 8.5, SE √(1/12 + 1/3) = 0.65 each -> holds
    assert claim(kind="interior_best", metric="fid", models=[S2, A, S16])["verdict"] == "holds"
    # s4 16 against the end s8 10.5: -5.5, SE √(1/12 + 1/3) -> every interior model loses to an end
    assert claim(kind="interior_best", metric="fid", models=[A, S4, S16])["verdict"] == "does not hold"
    # s32 16 ± 2√3 against s4 16 (0) and s16 19 (3, SE √(12 + 1/3) = 3.51): neither wins nor loses
    assert claim(kind="interior_best", metric="fid", models=[S4, S32, S16])["verdict"] == "not resolved"


def test_relative_and_threshold_over_seeds():
    # 10.5 ± 0.2887 <= 1.5 x teacher 8 (one seed) = 12: difference 1.5 > 2 x 0.2887
    relative = claim(kind="relative", model=A, reference="teacher", metric="fid", factor=1.5)
    assert relative["verdict"] == "holds"
    assert relative["evidence"] == (
        f"fid: {A} 10.5 ± 0.2887 (n = 3) <= 1.5 x teacher 8 = 12; difference = 1.5 (2 SE = 0.5774)"
    )
    assert claim(kind="relative", model=A, reference="teacher", metric="fid", factor=1.3)["verdict"] == "not resolved"
    # at least 0.5 x DoRA 12 ± √3: difference 10.5 - 6 = 4.5, SE √(1/12 + 0.25 x 3) = 0.9129 -> holds
    at_least = claim(kind="relative", model=A, reference=C, metric="fid", factor=0.5, at_least=True)
    assert at_least["verdict"] == "holds" and "difference = 4.5 (2 SE = 1.826)" in at_least["evidence"]
    assert claim(kind="relative", model=A, reference=C, metric="fid", factor=1.0)["verdict"] == "not resolved"
    # threshold: 10.5 ± 0.2887 against a maximum of 12 (1.5), 10.6 (0.1) and a minimum of 12 (-1.5)
    assert claim(kind="threshold", model=A, metric="fid", maximum=12)["verdict"] == "holds"
    assert claim(kind="threshold", model=A, metric="fid", maximum=10.6)["verdict"] == "not resolved"
    below = claim(kind="threshold", model=A, metric="fid", minimum=12)
    assert below["verdict"] == "does not hold"
    assert below["evidence"] == "fid 10.5 ± 0.2887 (n = 3) >= 12; difference = -1.5 (2 SE = 0.5774)"


def test_ratio_per_seed():
    ratios = np.array([2.2 / 0.1, 2.0 / 0.2, 2.4 / 0.1])  # 22, 10, 24: their mean, not 6.6 / 0.4
    mean, se = ratios.mean(), ratios.std(ddof=1) / np.sqrt(3)
    spec = {"kind": "ratio", "model": FT, "numerator": "dir_mean_pct", "denominator": "norm_mean_pct"}
    result = claim(**spec, at_least=5)
    assert result["verdict"] == "holds" and mean - 5 > 2 * se
    assert f"per seed: 22, 10, 24; mean {mean:.4g} ± {se:.4g} (n = 3) (needs >= 5)" in result["evidence"]
    assert claim(**spec, at_least=15)["verdict"] == "not resolved"  # 18.67 - 15 = 3.67 < 2 x 4.37
    assert claim(**spec, at_least=30)["verdict"] == "does not hold"
    two = SUMMARY.copy()  # the denominator of seed 2 missing: the ratios of seeds 0 and 1 only
    index = _row(two, FT, "norm_mean_pct").name
    two.at[index, "seed_ids"], two.at[index, "seed_values"] = (0, 1), (0.1, 0.2)
    only = check_claim({"claim": "c", "backbone": "toy", **spec, "at_least": 5}, two)
    # 22 and 10: mean 16, std 6√2, SE 6: 16 - 5 = 11 < 2 x 6
    assert only["evidence"].endswith("per seed: 22, 10; mean 16 ± 6 (n = 2) (needs >= 5); mean - 5 = 11 (2 SE = 12)")
    assert only["verdict"] == "not resolved"


def test_one_seed_decides_as_before():
    specs = [
        {"kind": "best", "metric": "fid", "winner": A, "others": [B, C]},
        {"kind": "interior_best", "metric": "fid", "models": [S2, A, S16]},
        {"kind": "relative", "model": A, "reference": "teacher", "metric": "fid", "factor": 1.2},
        {"kind": "threshold", "model": "teacher", "metric": "fid", "minimum": 9},
        {"kind": "ratio", "model": FT, "numerator": "dir_mean_pct", "denominator": "norm_mean_pct", "at_least": 5},
    ]
    specs = [{"claim": f"c{i}", "backbone": "toy", "evalset": "eval", **spec} for i, spec in enumerate(specs)]
    raw = _raw()
    plain = raw[~raw["model"].str.contains("-seed")]
    assert check_claims(specs, summarise_seeds(raw, 1)) == check_claims(specs, plain)
    results = check_claims(specs, plain)
    # C 9 < A 10 < B 20; A 10 beats S2 20 and S16 18; 10 <= 1.2 x 8 = 9.6 fails; 8 >= 9 fails; 22 >= 5
    assert [r["holds"] for r in results] == [False, True, False, False, True]
    assert results[4]["evidence"] == "dir_mean_pct 2.2 / norm_mean_pct 0.1 = 22 (needs >= 5)"


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
    assert seeds.frame["Model"].tolist() == [A, B, C, S2, S4, S16, S32]  # every model with FID over seeds
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
        [build_table(TABLE, SUMMARY)], title="R", intro="", claims=claims, seeds=3, z=2, seed_table=seeds
    )
    rule = (
        "A claim holds when the difference of the means over 3 seeds favours it by more than 2 standard errors "
        "of that difference, does not hold when it goes against it by as much, and is not resolved otherwise."
    )
    assert decision_rule(3, 2.0) == rule
    assert f"## Claims\n\n{rule}\n\n| Claim | Verdict | Evidence |\n" in report
    assert "| LoRaD wins | not resolved | fid: " in report
    assert "## Every run over seeds" in report and render_table(seeds) in report
    with pytest.raises(ValueError, match="'verdict' must be one of"):
        render_report([], title="R", intro="", claims=[{**claims[0], "verdict": "holds"}], seeds=3)


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
