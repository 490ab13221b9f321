"""The paper's claims, checked against our results: each claim in the config names the models and
the metric it is about, and :func:`check_claims` says whether our numbers support it, with the
numbers as evidence. A claim whose numbers are missing is undecided (``holds`` None), never guessed.

Kinds (``kind`` key):

* ``best``: ``winner`` has the best ``metric`` among ``winner`` and ``others``
  (``lower_is_better`` default True, e.g. FID);
* ``interior_best``: among ``models`` (an ordered sweep, e.g. ranks), the best is neither end;
* ``ratio``: ``numerator / denominator`` of one ``model`` is at least ``at_least``;
* ``relative``: ``model``'s ``metric`` is at most ``factor`` x ``reference``'s (``at_most``) or at
  least it (``at_least`` True);
* ``threshold``: ``model``'s ``metric`` is at least ``minimum`` (or at most ``maximum``).

Every claim has ``claim`` (the sentence), ``backbone`` and, for per-set metrics, ``evalset``.

The results are those of :func:`dkd.report.seeds.summarise_seeds` (a plain results frame counts as
one seed per model): each claim compares means over seeds through a difference oriented so that a
positive one favours the claim, and :func:`dkd.report.seeds.decide` gives the ``verdict``: "holds"
when the difference exceeds ``z`` standard errors of it, "does not hold" when it goes against the
claim by as much, "not resolved" otherwise, and "no data" when a number is missing (``holds`` True,
False, or None for the last two). With one seed this is the plain comparison of the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from .formats import metric_format
from .seeds import SUMMARY_COLUMNS, check_z, decide, difference_se, mean_se

KINDS = ("best", "interior_best", "ratio", "relative", "threshold")


HOLDS = {"holds": True, "does not hold": False}  # any other verdict: holds None
SPREAD = set(SUMMARY_COLUMNS) - {"backbone", "model", "evalset", "metric", "value", "source"}


@dataclass(frozen=True)
class Estimate:
    """A number over seeds: its ``mean``, standard error ``se`` (NaN: one seed), ``n`` and ``seeds`` {K: value}."""

    mean: float
    se: float
    n: int
    seeds: Mapping[int, float]


def _value(results: pd.DataFrame, backbone: str, model: str, metric: str, evalset: str | None) -> Estimate | None:
    level = metric_format(metric).model_level
    rows = results[(results["backbone"] == backbone) & (results["model"] == model) & (results["metric"] == metric)]
    rows = rows[rows["evalset"].isna()] if level else rows[rows["evalset"] == evalset]
    if rows.empty:
        return None
    row = rows.iloc[0]
    if "n" not in rows.columns:  # a plain results frame: one seed
        return Estimate(float(row["value"]), math.nan, 1, {0: float(row["value"])})
    seeds = {int(k): float(v) for k, v in zip(row["seed_ids"], row["seed_values"])}
    return Estimate(float(row["value"]), float(row["se"]), int(row["n"]), seeds)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _show(value: Estimate) -> str:
    """``mean ± SE (n = k)`` over several seeds, the plain number for one."""
    return _fmt(value.mean) if value.n == 1 else f"{_fmt(value.mean)} ± {_fmt(value.se)} (n = {value.n})"


def _compare(values: dict, lower: bool) -> str:
    order = sorted(values, key=lambda m: values[m].mean, reverse=not lower)
    return (" < " if lower else " > ").join(f"{m} {_show(values[m])}" for m in order)


def _difference(label: str, difference: float, se: float, z: float) -> str:
    return f"{label} = {_fmt(difference)} ({z:g} SE = {_fmt(z * se)})"


def _all(verdicts: Sequence[str]) -> str:
    """Holds when every verdict holds, does not hold when any does not, else not resolved."""
    if all(v == "holds" for v in verdicts):
        return "holds"
    return "does not hold" if "does not hold" in verdicts else "not resolved"


def _any(verdicts: Sequence[str]) -> str:
    """Holds when any verdict holds, does not hold when every one does not, else not resolved."""
    if "holds" in verdicts:
        return "holds"
    return "does not hold" if all(v == "does not hold" for v in verdicts) else "not resolved"


def _result(spec: Mapping, verdict: str, evidence: str) -> dict:
    return {"claim": spec["claim"], "holds": HOLDS.get(verdict), "verdict": verdict, "evidence": evidence}


def _ordered(spec: Mapping, values: dict[str, Estimate], z: float, spread: bool) -> dict:
    """``best`` and ``interior_best``: the winner against each other / an interior model against both ends."""
    metric, lower, models = spec["metric"], spec.get("lower_is_better", True), list(values)

    def versus(model: str, other: str) -> tuple[str, str]:  # does ``model`` beat ``other``?
        a, b = (values[other], values[model]) if lower else (values[model], values[other])
        names = (other, model) if lower else (model, other)
        difference, se = a.mean - b.mean, difference_se(a.se, b.se)
        return decide(difference, se, z=z), _difference(f"{names[0]} - {names[1]}", difference, se, z)

    if spec["kind"] == "best":
        pairs = [versus(models[0], other) for other in models[1:]]
        verdict = _all([v for v, _ in pairs])
    else:
        per_model = [[versus(model, end) for end in (models[0], models[-1])] for model in models[1:-1]]
        pairs = [pair for ends in per_model for pair in ends]
        verdict = _any([_all([v for v, _ in ends]) for ends in per_model])
    differences = "".join(f"; {text}" for _, text in pairs) if spread else ""
    return _result(spec, verdict, f"{metric}: {_compare(values, lower)}{differences}")


def _ratio(spec: Mapping, top: Estimate, bottom: Estimate, z: float) -> dict:
    """The ratio per seed that both metrics have, then its mean and SE against ``at_least``."""
    common = sorted(set(top.seeds) & set(bottom.seeds))
    if not common:
        return _result(spec, "no data", f"no seed with both {spec['numerator']} and {spec['denominator']}")
    ratios = [top.seeds[k] / bottom.seeds[k] if bottom.seeds[k] else float("inf") for k in common]
    mean, se = mean_se(ratios)
    difference, needs = mean - spec["at_least"], f"(needs >= {spec['at_least']})"
    if top.n == 1 and bottom.n == 1:
        evidence = (
            f"{spec['numerator']} {_fmt(top.mean)} / {spec['denominator']} {_fmt(bottom.mean)} = {_fmt(mean)} {needs}"
        )
    else:
        per_seed = ", ".join(_fmt(r) for r in ratios)
        shown = Estimate(mean, se, len(ratios), dict(zip(common, ratios)))
        evidence = (
            f"{spec['numerator']} / {spec['denominator']} per seed: {per_seed}; mean {_show(shown)} {needs}; "
            + _difference(f"mean - {spec['at_least']}", difference, difference_se(se), z)
        )
    return _result(spec, decide(difference, difference_se(se), z=z), evidence)


def check_claim(spec: Mapping, results: pd.DataFrame, *, z: float = 2.0) -> dict:
    """``{"claim", "holds", "verdict", "evidence"}`` for one claim spec on ``results`` (a frame of
    :func:`~dkd.report.seeds.summarise_seeds`, or a plain results frame: one seed per model), decided
    with ``z`` standard errors (see the module docstring)."""
    kind = spec.get("kind")
    if kind not in KINDS or "claim" not in spec or "backbone" not in spec:
        raise ValueError(f"a claim needs 'claim', 'backbone' and 'kind' in {KINDS}; got {dict(spec)}.")
    z = check_z(z)
    if SPREAD & set(results.columns) and not SPREAD <= set(results.columns):
        raise ValueError(f"results over seeds need all of the columns {sorted(SPREAD)} (summarise_seeds).")
    backbone, evalset = spec["backbone"], spec.get("evalset")

    def get(model: str, metric: str) -> Estimate | None:
        return _value(results, backbone, model, metric, evalset)

    if kind in ("best", "interior_best"):
        metric = spec["metric"]
        models = [spec["winner"], *spec["others"]] if kind == "best" else list(spec["models"])
        values = {m: get(m, metric) for m in models}
        missing = [m for m, v in values.items() if v is None]
        if missing:
            return _result(spec, "no data", f"no {metric} for {', '.join(missing)}")
        return _ordered(spec, values, z, any(v.n > 1 for v in values.values()))
    if kind == "ratio":
        top, bottom = get(spec["model"], spec["numerator"]), get(spec["model"], spec["denominator"])
        if top is None or bottom is None:
            return _result(spec, "no data", f"no {spec['numerator']}/{spec['denominator']}")
        return _ratio(spec, top, bottom, z)
    if kind == "relative":
        ours, ref = get(spec["model"], spec["metric"]), get(spec["reference"], spec["metric"])
        if ours is None or ref is None:
            return _result(spec, "no data", f"no {spec['metric']} for the pair")
        at_least, factor = spec.get("at_least", False), spec["factor"]
        bound = factor * ref.mean
        difference = ours.mean - bound if at_least else bound - ours.mean
        se = difference_se(ours.se, factor * ref.se)
        evidence = (
            f"{spec['metric']}: {spec['model']} {_show(ours)} {'>=' if at_least else '<='} {factor} x "
            f"{spec['reference']} {_show(ref)} = {_fmt(bound)}"
        )
        if ours.n > 1 or ref.n > 1:
            evidence += "; " + _difference("difference", difference, se, z)
        return _result(spec, decide(difference, se, z=z), evidence)
    value = get(spec["model"], spec["metric"])
    if value is None:
        return _result(spec, "no data", f"no {spec['metric']} for {spec['model']}")
    if "minimum" in spec:
        difference, evidence = value.mean - spec["minimum"], f"{spec['metric']} {_show(value)} >= {spec['minimum']}"
    else:
        difference, evidence = spec["maximum"] - value.mean, f"{spec['metric']} {_show(value)} <= {spec['maximum']}"
    se = difference_se(value.se)
    if value.n > 1:
        evidence += "; " + _difference("difference", difference, se, z)
    return _result(spec, decide(difference, se, z=z), evidence)


def check_claims(specs: Sequence[Mapping], results: pd.DataFrame, *, z: float = 2.0) -> list[dict]:
    """:func:`check_claim` of every spec."""
    return [check_claim(spec, results, z=z) for spec in specs]
