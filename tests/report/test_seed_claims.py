"""Claims over seeds: the decision rule (paired differences, Student's t) against scipy's t tests, every
claim kind over seeds, a constant teacher, Bonferroni over interior models, missing seeds, and one-seed ties
and equalities decided as before seeds."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dkd.report import render_report
from dkd.report.claims import check_claim, check_claims
from dkd.report.results import RESULT_COLUMNS
from dkd.report.seeds import bonferroni, critical_t, decide, summarise_seeds
from tests.report.test_seeds import FT, S2, S4, S16, S32, SEEDS, SUMMARY, A, B, C, M, P, Q, _raw, _row, claim


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
