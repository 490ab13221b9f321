"""The report over seeds: means and standard errors against numpy, the decision rule (paired differences,
Student's t) against scipy's t tests, every claim kind over seeds, a constant teacher, Bonferroni over
interior models, non-finite and missing seeds, the "mean ± SE" cells, the seed table and the rendered
rule; with one seed the report is the one of before, ties and equalities decided as before seeds."""

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
    bonferroni,
    critical_t,
    decide,
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


def _reference(differences, level: float = 0.95) -> str:
    """The verdict by scipy: a two-sided one-sample t test of the per-seed differences against 0 at
    1 − level, its sign saying for or against."""
    differences = np.asarray(differences, dtype=float)
    result = stats.ttest_1samp(differences, 0.0)
    if result.pvalue < 1 - level:
        return "holds" if differences.mean() > 0 else "does not hold"
    return "not resolved"


def test_decide_against_scipy():
    # the t quantiles by hand (tables of Student's t): 4.303 (2 df), 2.776 (4 df), 6.205 (2 df, 0.9875)
    assert critical_t(3) == pytest.approx(4.303, abs=5e-4) and critical_t(5) == pytest.approx(2.776, abs=5e-4)
    assert bonferroni(0.95, 2) == pytest.approx(0.975) and critical_t(3, 0.975) == pytest.approx(6.205, abs=5e-4)
    for differences in ([10, 10.5, 11], [-1, 1.5, 4], [-10, -10.5, -11], [2, 3, 4], [1, 3, 5], [-0.2, 0.1, -0.4, 0.3]):
        decision = decide(differences)
        assert decision.verdict == _reference(differences)
        array = np.asarray(differences, dtype=float)
        assert decision.mean == pytest.approx(array.mean())
        assert decision.se == pytest.approx(stats.sem(array))  # sd (ddof 1) / √n
        assert decision.t == pytest.approx(stats.t.ppf(0.975, array.size - 1))
    # 10, 10.5, 11: mean 10.5 > 4.303 x 0.5/√3 = 1.242 (a clear win); -1, 1.5, 4: 1.5 < 4.303 x 2.5/√3 (a tie)
    assert [decide(d).verdict for d in ([10, 10.5, 11], [-1, 1.5, 4], [-10, -10.5, -11])] == [
        "holds",
        "not resolved",
        "does not hold",
    ]
    assert decide([10, 10.5, 11]).margin == pytest.approx(4.302653 * 0.5 / math.sqrt(3))
    # 2, 3, 4: t statistic 3 / (1/√3) = 5.196, between 4.303 (95%) and 6.205 (Bonferroni over 2: 97.5%)
    assert decide([2, 3, 4]).verdict == "holds" and decide([2, 3, 4], level=0.975).verdict == "not resolved"
    assert decide([2, 2, 2]).verdict == "holds" and decide([0, 0, 0]).verdict == "not resolved"  # SE 0
    # one value: the plain comparison, an exact 0 as ``tie`` says, ±inf by its sign, NaN not resolved
    assert [decide([d]).verdict for d in (0.1, -0.1, 0.0, math.inf, -math.inf, math.nan)] == [
        "holds",
        "does not hold",
        "holds",
        "holds",
        "does not hold",
        "not resolved",
    ]
    assert decide([0.0], tie="does not hold").verdict == "does not hold"
    assert decide([1.0, math.inf]).verdict == "not resolved" and decide([1.0, math.nan]).verdict == "not resolved"
    for level in (0, 1, 1.5, True, "0.95"):
        with pytest.raises(ValueError, match="level must be a number between 0 and 1"):
            decide([1.0], level=level)
    with pytest.raises(ValueError, match="no differences"):
        decide([])


def claim(results=SUMMARY, **spec):
    return check_claim({"claim": "c", "backbone": "toy", "evalset": "eval", **spec}, results, level=0.95)


def _fid(model):
    return np.array(SEEDS[(model, "fid")][:3], dtype=float)


def _paired_text(label: str, differences) -> str:
    """The evidence of a paired difference, its numbers from scipy: mean, t quantile, standard error."""
    d = np.asarray(differences, dtype=float)
    t, se = stats.t.ppf(0.975, d.size - 1), stats.sem(d)
    return f"{label} = {d.mean():.4g} (mean over {d.size} paired seeds; t·SE = {t:.3f} x {se:.4g} = {t * se:.4g})"


def test_best_over_seeds():
    # LoRA - LoRaD per seed: 10, 10.5, 11 -> mean 10.5 > 4.303 x 0.2887 = 1.242: holds
    win = claim(kind="best", metric="fid", winner=A, others=[B])
    assert (win["verdict"], win["holds"]) == ("holds", True) == (_reference(_fid(B) - _fid(A)), True)
    assert win["evidence"] == (
        f"fid: {A} 10.5 ± 0.2887 (n = 3) < {B} 21 ± 0.5774 (n = 3); {_paired_text(f'{B} - {A}', _fid(B) - _fid(A))}"
    )
    assert "t·SE = 4.303 x 0.2887 = 1.242" in win["evidence"]  # by hand: 4.3027 x 0.5/√3
    # against DoRA: -1, 1.5, 4 -> mean 1.5 < 4.303 x 1.443: a tie (seed 0 alone: DoRA 9 wins)
    tie = claim(kind="best", metric="fid", winner=A, others=[C])
    assert (tie["verdict"], tie["holds"]) == ("not resolved", None) == (_reference(_fid(C) - _fid(A)), None)
    assert stats.ttest_rel(_fid(C), _fid(A)).pvalue > 0.05
    one = claim(summarise_seeds(_raw(), 1), kind="best", metric="fid", winner=A, others=[C])
    assert one["verdict"] == "does not hold" and one["evidence"] == f"fid: {C} 9 < {A} 10"
    lost = claim(kind="best", metric="fid", winner=B, others=[A])  # the reversed order: -10.5
    assert (lost["verdict"], lost["holds"]) == ("does not hold", False)
    assert claim(kind="best", metric="fid", winner=A, others=[B, C])["verdict"] == "not resolved"
    assert claim(kind="best", metric="fid", winner=B, others=[A, C])["verdict"] == "does not hold"
    missing = claim(kind="best", metric="fid", winner=A, others=["dora-s2-f4-linear-zero"])
    assert (missing["verdict"], missing["holds"]) == ("no data", None)


def test_pairing_by_seed_matters():
    """P is Q + 1 at every seed (Q + 1, 1.1, 0.9), but both vary by 8 over the seeds: paired, P is surely
    worse; unpaired (Welch or the old √(SE₁² + SE₂²) with z = 2) the difference of 1 is lost in the spread."""
    p, q = _fid(P), _fid(Q)
    assert stats.ttest_rel(p, q).pvalue < 0.05 < stats.ttest_ind(p, q, equal_var=False).pvalue
    unpaired_se = math.hypot(stats.sem(p), stats.sem(q))
    assert abs(p.mean() - q.mean()) < 2 * unpaired_se  # the old rule: not resolved
    better = claim(kind="best", metric="fid", winner=Q, others=[P])
    assert better["verdict"] == "holds" == _reference(p - q)
    assert better["evidence"].endswith(_paired_text(f"{P} - {Q}", p - q))
    assert claim(kind="best", metric="fid", winner=P, others=[Q])["verdict"] == "does not hold"
    higher = claim(kind="best", metric="fid", winner=P, others=[Q], lower_is_better=False)  # P - Q > 0
    assert higher["verdict"] == "holds" and higher["evidence"].endswith(_paired_text(f"{P} - {Q}", p - q))


def test_a_teacher_without_seeds_is_a_constant():
    teacher = 8.0  # one seed, not a run: the same number against every seed of the student
    assert claim(kind="best", metric="fid", winner="teacher", others=[A])["verdict"] == _reference(_fid(A) - teacher)
    relative = claim(kind="relative", model=A, reference="teacher", metric="fid", factor=1.5)
    assert relative["verdict"] == "holds" == _reference(1.5 * teacher - _fid(A))  # 2, 1.5, 1
    assert relative["evidence"] == (
        f"fid: {A} 10.5 ± 0.2887 (n = 3) <= 1.5 x teacher 8 = 12; "
        + _paired_text("difference", 1.5 * teacher - _fid(A))
    )
    tight = claim(kind="relative", model=A, reference="teacher", metric="fid", factor=1.3)  # 0.4, -0.1, -0.6
    assert tight["verdict"] == "not resolved" == _reference(1.3 * teacher - _fid(A))


def test_interior_best_over_seeds():
    # s8 beats the ends s2 and s16 by 10, 10.5, 11 and 8, 8.5, 9 per seed -> holds
    assert claim(kind="interior_best", metric="fid", models=[S2, A, S16])["verdict"] == "holds"
    # s4 against the end s8: -5, -5.5, -6 -> every interior model loses to an end
    assert claim(kind="interior_best", metric="fid", models=[A, S4, S16])["verdict"] == "does not hold"
    # s32 against s4: 5, 0, -5 (mean 0): neither wins nor loses
    assert claim(kind="interior_best", metric="fid", models=[S4, S32, S16])["verdict"] == "not resolved"


def test_interior_best_is_bonferroni_over_the_interior_models():
    """M against the end s16: 2, 3, 4 per seed, t statistic 5.196: beyond t = 4.303 (95%) with one interior
    model, within t = 6.205 (97.5% each) with two; against s2 (4, 5, 6: 8.66) it wins either way."""
    to_s16, to_s2 = _fid(S16) - _fid(M), _fid(S2) - _fid(M)
    assert stats.ttest_1samp(to_s16, 0).pvalue < 0.05 < 2 * stats.ttest_1samp(to_s16, 0).pvalue  # 0.025 < p < 0.05
    assert stats.ttest_1samp(to_s2, 0).pvalue < 0.025
    one = claim(kind="interior_best", metric="fid", models=[S2, M, S16])
    assert one["verdict"] == "holds" and _paired_text(f"{S16} - {M}", to_s16) in one["evidence"]
    # with LoRA (20, 21, 22) also inside, which loses to s16 by 2 at every seed: M is no longer resolved
    two = claim(kind="interior_best", metric="fid", models=[S2, M, B, S16])
    assert two["verdict"] == "not resolved"
    t = stats.t.ppf(1 - 0.05 / 2 / 2, 2)  # 6.205
    assert f"t·SE = {t:.3f} x {stats.sem(to_s16):.4g}" in two["evidence"]
    assert claim(kind="interior_best", metric="fid", models=[S2, B, S16])["verdict"] == "does not hold"


def test_relative_and_threshold_over_seeds():
    # at least 0.5 x DoRA: 10 - 4.5, 10.5 - 6, 11 - 7.5 = 5.5, 4.5, 3.5 -> mean 4.5 > 4.303 x 0.5774 -> holds
    at_least = claim(kind="relative", model=A, reference=C, metric="fid", factor=0.5, at_least=True)
    assert at_least["verdict"] == "holds" == _reference(_fid(A) - 0.5 * _fid(C))
    assert at_least["evidence"].endswith(_paired_text("difference", [5.5, 4.5, 3.5]))
    at_most = claim(kind="relative", model=A, reference=C, metric="fid", factor=1.0)  # -1, 1.5, 4
    assert at_most["verdict"] == "not resolved" == _reference(_fid(C) - _fid(A))
    # threshold: against a maximum of 12 (2, 1.5, 1), 10.6 (0.6, 0.1, -0.4) and a minimum of 12 (-2, -1.5, -1)
    assert claim(kind="threshold", model=A, metric="fid", maximum=12)["verdict"] == "holds" == _reference(12 - _fid(A))
    assert claim(kind="threshold", model=A, metric="fid", maximum=10.6)["verdict"] == "not resolved"
    below = claim(kind="threshold", model=A, metric="fid", minimum=12)
    assert below["verdict"] == "does not hold" == _reference(_fid(A) - 12)
    assert below["evidence"] == f"fid 10.5 ± 0.2887 (n = 3) >= 12; {_paired_text('difference', _fid(A) - 12)}"


def test_ratio_per_seed():
    ratios = np.array([2.2 / 0.1, 2.0 / 0.11, 2.4 / 0.1])  # 22, 18.18, 24: their mean, not 6.6 / 0.31
    mean, se = ratios.mean(), stats.sem(ratios)
    spec = {"kind": "ratio", "model": FT, "numerator": "dir_mean_pct", "denominator": "norm_mean_pct"}
    result = claim(**spec, at_least=5)
    assert result["verdict"] == "holds" == _reference(ratios - 5)
    assert f"per seed: 22, 18.18, 24; mean {mean:.4g} ± {se:.4g} (n = 3) (needs >= 5)" in result["evidence"]
    assert result["evidence"].endswith(_paired_text("mean - 5", ratios - 5))
    assert claim(**spec, at_least=20)["verdict"] == "not resolved" == _reference(ratios - 20)
    assert claim(**spec, at_least=30)["verdict"] == "does not hold" == _reference(ratios - 30)
    two = SUMMARY.copy()  # the denominator of seed 2 missing: the ratios of seeds 0 and 1 only
    index = _row(two, FT, "norm_mean_pct").name
    two.at[index, "seed_ids"], two.at[index, "seed_values"] = (0, 1), (0.1, 0.11)
    only = check_claim({"claim": "c", "backbone": "toy", **spec, "at_least": 5}, two)
    # 22 and 18.18 with 1 degree of freedom: t = 12.71
    assert only["evidence"].endswith(_paired_text("mean - 5", ratios[:2] - 5))
    assert only["verdict"] == "not resolved" == _reference(ratios[:2] - 5)
    one = two.copy()  # the denominator of seed 0 only: too few seeds with both
    one.at[index, "seed_ids"], one.at[index, "seed_values"], one.at[index, "n"] = (0,), (0.1,), 1
    alone = check_claim({"claim": "c", "backbone": "toy", **spec, "at_least": 5}, one)
    assert alone["verdict"] == "not resolved" and "fewer than 2 seeds with both" in alone["evidence"]


def test_one_seed_ties_and_equalities_decide_as_the_old_code():
    """Exact equalities with one seed, decided as the code before seeds did (git show HEAD~1:dkd/report/claims.py):
    ``best`` took ``min(values, key=values.get)`` (``max`` for higher is better) over [winner, *others], so a
    tie went to the one listed first; ``interior_best`` held when that first best was not an end; threshold
    and ratio compared with >= minimum / at_least and <= maximum, relative with <= (>= with at_least)."""
    rows = [
        ("toy", "w", "eval", "fid", 10.0),
        ("toy", "o", "eval", "fid", 10.0),
        ("toy", "x", "eval", "fid", 9.0),
        ("toy", "end", "eval", "fid", 12.0),
        ("toy", "teacher", "eval", "fid", 8.0),
        ("toy", "ft", None, "dir_mean_pct", 2.0),
        ("toy", "ft", None, "norm_mean_pct", 0.5),
    ]
    plain = pd.DataFrame(rows, columns=["backbone", "model", "evalset", "metric", "value"])
    raw = plain.assign(source="r.json")[list(RESULT_COLUMNS)]
    specs = [
        ({"kind": "best", "metric": "fid", "winner": "w", "others": ["o"]}, True),  # min -> w (listed first)
        ({"kind": "best", "metric": "fid", "winner": "o", "others": ["w"]}, True),  # min -> o
        ({"kind": "best", "metric": "fid", "winner": "w", "others": ["o"], "lower_is_better": False}, True),
        ({"kind": "best", "metric": "fid", "winner": "w", "others": ["o", "x"]}, False),  # min -> x
        ({"kind": "interior_best", "metric": "fid", "models": ["w", "o", "end"]}, False),  # min -> w, an end
        ({"kind": "interior_best", "metric": "fid", "models": ["end", "w", "o"]}, True),  # min -> w, inside
        ({"kind": "threshold", "model": "w", "metric": "fid", "minimum": 10}, True),  # 10 >= 10
        ({"kind": "threshold", "model": "w", "metric": "fid", "maximum": 10}, True),  # 10 <= 10
        (
            {
                "kind": "ratio",
                "model": "ft",
                "numerator": "dir_mean_pct",
                "denominator": "norm_mean_pct",
                "at_least": 4,
            },
            True,
        ),
        (
            {"kind": "relative", "model": "end", "reference": "teacher", "metric": "fid", "factor": 1.5},
            True,
        ),  # 12 <= 12
        (
            {
                "kind": "relative",
                "model": "end",
                "reference": "teacher",
                "metric": "fid",
                "factor": 1.5,
                "at_least": True,
            },
            True,
        ),
    ]
    specs = [
        ({"claim": f"c{i}", "backbone": "toy", "evalset": "eval", **spec}, old) for i, (spec, old) in enumerate(specs)
    ]
    for results in (plain, summarise_seeds(raw, 1)):
        decided = check_claims([spec for spec, _ in specs], results)
        assert [c["holds"] for c in decided] == [old for _, old in specs]
        assert all(c["verdict"] in ("holds", "does not hold") for c in decided)
    report = render_report([], title="R", intro="", claims=decided)
    assert len(re.findall(r"^\| c\d+ \| (yes|no) \|", report, flags=re.M)) == len(
        specs
    )  # as tests/workflow/test_toy.py


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


def test_a_seeded_model_missing_seeds_is_not_resolved():
    raw = _raw()
    gone = raw[~raw["model"].isin([f"{A}-seed1", f"{A}-seed2"])]  # only seed 0 of A: n = 1, but A has seeds
    summary = summarise_seeds(gone, 3)
    assert _row(summary, A, "fid")["n"] == 1
    result = claim(summary, kind="best", metric="fid", winner=A, others=[B])
    assert result["verdict"] == "not resolved"
    assert f"{A} has seed 0, {B} seeds 0, 1, 2: fewer than 2 seeds to pair, not resolved" in result["evidence"]
    assert claim(summary, kind="relative", model=B, reference=A, metric="fid", factor=2)["verdict"] == "not resolved"
    # the teacher (one seed, not a run) is a constant: no such problem against a seeded model
    assert claim(summary, kind="best", metric="fid", winner="teacher", others=[B])["verdict"] == "holds"
    only_two = raw[raw["model"] != f"{A}-seed1"]  # seeds 0 and 2 of A: paired with B's 0 and 2
    result = claim(summarise_seeds(only_two, 3), kind="best", metric="fid", winner=A, others=[B])
    differences = np.array([20.0 - 10.0, 22.0 - 11.0])
    assert result["verdict"] == _reference(differences) and result["evidence"].endswith(
        _paired_text(f"{B} - {A}", differences)
    )


def test_a_seeded_model_left_with_one_seed_is_not_decided_against_a_constant():
    """With distill.seeds 3, a run of which only seed 0 remains is no constant: against the teacher and in a
    threshold claim it leaves the claim not resolved (with one configured seed it is the plain comparison)."""
    raw = _raw()
    gone = summarise_seeds(raw[~raw["model"].isin([f"{A}-seed1", f"{A}-seed2"])], 3)
    versus = {"kind": "relative", "backbone": "toy", "evalset": "eval", "claim": "c", "model": A,
              "reference": "teacher", "metric": "fid", "factor": 2}  # fmt: skip
    alone = {"kind": "threshold", "backbone": "toy", "evalset": "eval", "claim": "c", "model": A,
             "metric": "fid", "maximum": 50}  # fmt: skip
    for spec in (versus, alone):
        result = check_claim(spec, gone, seeds=3)
        assert result["verdict"] == "not resolved" and result["holds"] is None
        assert result["evidence"] == f"fid of {A} has only seed 0 of 3: not resolved"
        assert check_claim(spec, gone, seeds=1)["verdict"] == "holds"  # 10 <= 2 x 8 and 10 <= 50
    # all three seeds: 2 x 8 - (10, 10.5, 11) = (6, 5.5, 5), mean 5.5 > t(2) 4.303 x SE 0.2887 = 1.24
    assert check_claims([versus], SUMMARY, seeds=3)[0]["verdict"] == _reference(np.array([6.0, 5.5, 5.0]))
    assert _reference(np.array([6.0, 5.5, 5.0])) == "holds"


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
