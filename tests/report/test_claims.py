"""Claims checked against result tables: each kind on constructed numbers with a known answer."""

import pandas as pd
import pytest

from dkd.report.claims import check_claim, check_claims

ROWS = [
    # backbone, model, evalset, metric, value
    ("toy", "lorad", "eval", "fid", 10.0),
    ("toy", "lora", "eval", "fid", 12.0),
    ("toy", "ft", "eval", "fid", 11.0),
    ("toy", "s2", "eval", "fid", 14.0),
    ("toy", "s8", "eval", "fid", 9.0),
    ("toy", "s16", "eval", "fid", 9.5),
    ("toy", "teacher", "eval", "fid", 8.0),
    ("toy", "teacher", "eval", "digit_accuracy", 0.97),
    ("toy", "ft", None, "dir_mean_pct", 2.2),
    ("toy", "ft", None, "norm_mean_pct", 0.1),
    ("toy", "lorad", None, "trainable_M", 0.02),
    ("toy", "lora", None, "trainable_M", 0.03),
    ("toy", "lorad", "other", "fid", 99.0),  # another evaluation set: never mixed in
]
RESULTS = pd.DataFrame(ROWS, columns=["backbone", "model", "evalset", "metric", "value"])
BASE = {"claim": "c", "backbone": "toy", "evalset": "eval"}


def claim(**spec):
    return check_claim({**BASE, **spec}, RESULTS)


def test_best_lower_and_higher_is_better():
    result = claim(kind="best", metric="fid", winner="lorad", others=["lora", "ft"])
    assert result["holds"] is True and result["evidence"] == "fid: lorad 10 < ft 11 < lora 12"
    assert claim(kind="best", metric="fid", winner="lora", others=["lorad"])["holds"] is False
    assert claim(kind="best", metric="fid", winner="lora", others=["lorad"], lower_is_better=False)["holds"] is True
    # model-level metric: looked up without an evaluation set
    assert claim(kind="best", metric="trainable_M", winner="lorad", others=["lora"])["holds"] is True


def test_interior_best():
    assert claim(kind="interior_best", metric="fid", models=["s2", "s8", "s16"])["holds"] is True
    assert claim(kind="interior_best", metric="fid", models=["s2", "s16", "s8"])["holds"] is False


def test_ratio_relative_and_threshold():
    ratio = claim(kind="ratio", model="ft", numerator="dir_mean_pct", denominator="norm_mean_pct", at_least=5)
    assert ratio["holds"] is True and "= 22" in ratio["evidence"]
    assert (
        claim(kind="ratio", model="ft", numerator="dir_mean_pct", denominator="norm_mean_pct", at_least=30)["holds"]
        is False
    )
    # 10 <= 1.5 x 8 = 12 holds; 10 <= 1.2 x 8 = 9.6 does not
    assert claim(kind="relative", model="lorad", reference="teacher", metric="fid", factor=1.5)["holds"] is True
    assert claim(kind="relative", model="lorad", reference="teacher", metric="fid", factor=1.2)["holds"] is False
    assert claim(kind="threshold", model="teacher", metric="digit_accuracy", minimum=0.9)["holds"] is True
    assert claim(kind="threshold", model="teacher", metric="fid", maximum=7.5)["holds"] is False


def test_missing_numbers_leave_the_claim_undecided():
    result = claim(kind="best", metric="fid", winner="lorad", others=["dora"])
    assert result["holds"] is None and "dora" in result["evidence"]
    assert claim(kind="threshold", model="dora", metric="fid", maximum=1)["holds"] is None


def test_bad_claims_fail_clearly():
    with pytest.raises(ValueError, match="kind"):
        check_claims([{"claim": "x", "backbone": "toy", "kind": "biggest"}], RESULTS)
