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
one seed per model). Seed K of every model shares the prompt order, the training noise and the
evaluation noise, so each comparison pairs its models seed by seed: per seed both have, the quantity
whose sign decides the claim, oriented so that a positive one favours it (``best``: other − winner
when lower is better; ``relative`` at most: factor · reference − model; ``threshold``: value −
minimum or maximum − value; ``ratio``: numerator / denominator − at_least). A model without seeds
(n = 1, seed 0, not a run, merge or swapped model: a teacher) is a constant over the other model's
seeds. :func:`dkd.report.seeds.decide` gives the ``verdict`` from those differences: "holds" when
their mean exceeds t standard errors of it (Student's t, two-sided ``level``, n − 1 degrees of
freedom; over the m interior models of ``interior_best`` at the Bonferroni level 1 − (1 − level)/m
each), "does not hold" when it goes against the claim by as much, "not resolved" otherwise or when a
model with seeds has fewer than 2 seeds to pair with one that has several or a number of a seed is
not finite (the evidence says which), and "no data" when a number is missing (``holds`` True, False,
or None for the last two). With one seed this is the plain comparison of the numbers, an equality
counted as before seeds: the winner of ``best`` listed first wins a tie (so does an interior model
against the last end of ``interior_best``, not against the first), and a bound is inclusive (>=
minimum, at_least; <= maximum, at most).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from .formats import metric_format
from .seeds import DECISION_LEVEL, SUMMARY_COLUMNS, Decision, bonferroni, check_level, decide, has_seeds, mean_se

KINDS = ("best", "interior_best", "ratio", "relative", "threshold")


HOLDS = {"holds": True, "does not hold": False}  # any other verdict: holds None
SPREAD = set(SUMMARY_COLUMNS) - {"backbone", "model", "evalset", "metric", "value", "source"}


@dataclass(frozen=True)
class Estimate:
    """A number over seeds: its ``mean``, standard error ``se`` (NaN: one seed), ``n``, ``seeds`` {K: value},
    the ``model`` and ``metric`` it is of, and whether it is ``constant``: a model without seeds, its one
    value standing for every seed of the model it is compared with."""

    mean: float
    se: float
    n: int
    seeds: Mapping[int, float]
    model: str
    metric: str
    constant: bool

    def at(self, k: int) -> float:
        """The value of seed ``k`` (a constant's one value for every ``k``)."""
        return self.seeds[0] if self.constant else self.seeds[k]


def _value(results: pd.DataFrame, backbone: str, model: str, metric: str, evalset: str | None) -> Estimate | None:
    level = metric_format(metric).model_level
    rows = results[(results["backbone"] == backbone) & (results["model"] == model) & (results["metric"] == metric)]
    rows = rows[rows["evalset"].isna()] if level else rows[rows["evalset"] == evalset]
    if rows.empty:
        return None
    row = rows.iloc[0]
    if "n" not in rows.columns:  # a plain results frame: one seed
        value = float(row["value"])
        return Estimate(value, math.nan, 1, {0: value}, model, metric, not has_seeds(model))
    seeds = {int(k): float(v) for k, v in zip(row["seed_ids"], row["seed_values"])}
    constant = int(row["n"]) == 1 and tuple(seeds) == (0,) and not has_seeds(model)
    return Estimate(float(row["value"]), float(row["se"]), int(row["n"]), seeds, model, metric, constant)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _mean(mean: float, se: float, n: int) -> str:
    """``mean ± SE (n = k)`` over several seeds, the plain number for one."""
    return _fmt(mean) if n == 1 else f"{_fmt(mean)} ± {_fmt(se)} (n = {n})"


def _show(value: Estimate) -> str:
    return _mean(value.mean, value.se, value.n)


def _seed_list(value: Estimate) -> str:
    ids = sorted(value.seeds)
    return f"seed{'s' if len(ids) > 1 else ''} {', '.join(str(k) for k in ids)}"


def _compare(values: dict, lower: bool) -> str:
    order = sorted(values, key=lambda m: values[m].mean, reverse=not lower)
    return (" < " if lower else " > ").join(f"{m} {_show(values[m])}" for m in order)


def _difference(label: str, decision: Decision) -> str:
    """The paired mean difference and its t·SE (the plain difference for one seed)."""
    if decision.n == 1:
        return f"{label} = {_fmt(decision.mean)}"
    return (
        f"{label} = {_fmt(decision.mean)} (mean over {decision.n} paired seeds; t·SE = {decision.t:.3f} x "
        f"{_fmt(decision.se)} = {_fmt(decision.margin)})"
    )


def _not_finite(values: Sequence[Estimate], ids: Sequence[int]) -> str | None:
    """The first number of ``values`` at seeds ``ids`` that is not finite (a diverged seed), as evidence."""
    for value in values:
        for k in [0] if value.constant else ids:
            if not math.isfinite(value.at(k)):
                seed = "" if value.constant else f" at seed {k}"
                return f"{value.metric} of {value.model}{seed} is {value.at(k)}: not resolved"
    return None


def _paired(
    a: Estimate, b: Estimate, difference: Callable[[float, float], float], level: float, tie: str
) -> tuple[Decision | None, str | None]:
    """:func:`~dkd.report.seeds.decide` on ``difference(a_K, b_K)`` over the seeds K both have (a constant
    over the other's seeds), or None and why the comparison is not resolved."""
    if a.constant or b.constant:
        ids = sorted(b.seeds if a.constant else a.seeds)
    else:
        ids = sorted(set(a.seeds) & set(b.seeds))
        if not ids or (len(ids) < 2 and max(a.n, b.n) >= 2):
            return None, (
                f"{a.model} has {_seed_list(a)}, {b.model} {_seed_list(b)}: fewer than 2 seeds to pair, not resolved"
            )
    problem = _not_finite([a, b], ids)
    if problem:
        return None, problem
    return decide([difference(a.at(k), b.at(k)) for k in ids], level=level, tie=tie), None


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


def _ordered(spec: Mapping, values: dict[str, Estimate], level: float, spread: bool) -> dict:
    """``best`` and ``interior_best``: the winner against each other / an interior model against both ends
    (at the Bonferroni level over the interior models)."""
    metric, lower, models = spec["metric"], spec.get("lower_is_better", True), list(values)

    def versus(model: str, other: str, level: float, tie: str) -> tuple[str, str | None]:  # ``model`` beats ``other``?
        names = (other, model) if lower else (model, other)
        decision, problem = _paired(
            values[model], values[other], (lambda m, o: o - m) if lower else (lambda m, o: m - o), level, tie
        )
        if problem:
            return "not resolved", problem
        return decision.verdict, _difference(f"{names[0]} - {names[1]}", decision) if spread else None

    if spec["kind"] == "best":  # the winner, listed first, wins a tie of one seed (as min / max did)
        pairs = [versus(models[0], other, level, "holds") for other in models[1:]]
        verdict = _all([v for v, _ in pairs])
    else:  # one seed: an interior model loses a tie to the first end, wins it against the last
        each = bonferroni(level, max(len(models) - 2, 1))
        per_model = [
            [versus(model, models[0], each, "does not hold"), versus(model, models[-1], each, "holds")]
            for model in models[1:-1]
        ]
        pairs = [pair for ends in per_model for pair in ends]
        verdict = _any([_all([v for v, _ in ends]) for ends in per_model])
    differences = "".join(f"; {text}" for _, text in pairs if text)
    return _result(spec, verdict, f"{metric}: {_compare(values, lower)}{differences}")


def _ratio(spec: Mapping, top: Estimate, bottom: Estimate, level: float) -> dict:
    """The ratio per seed that both metrics have, against ``at_least``."""
    common = sorted(set(top.seeds) & set(bottom.seeds))
    if not common:
        return _result(spec, "no data", f"no seed with both {spec['numerator']} and {spec['denominator']}")
    if len(common) < 2 and max(top.n, bottom.n) >= 2:
        return _result(
            spec,
            "not resolved",
            f"{spec['numerator']} of {top.model} has {_seed_list(top)}, {spec['denominator']} {_seed_list(bottom)}: "
            "fewer than 2 seeds with both, not resolved",
        )
    problem = _not_finite([top, bottom], common)
    ratios = [top.seeds[k] / bottom.seeds[k] if bottom.seeds[k] else float("inf") for k in common]
    decision = decide([r - spec["at_least"] for r in ratios], level=level)
    needs = f"(needs >= {spec['at_least']})"
    if top.n == 1 and bottom.n == 1:
        evidence = (
            f"{spec['numerator']} {_fmt(top.mean)} / {spec['denominator']} {_fmt(bottom.mean)} = "
            f"{_fmt(ratios[0])} {needs}"
        )
    else:
        per_seed = ", ".join(_fmt(r) for r in ratios)
        mean = _mean(*mean_se(ratios), len(ratios))
        evidence = (
            f"{spec['numerator']} / {spec['denominator']} per seed: {per_seed}; mean {mean} {needs}; "
            + _difference(f"mean - {spec['at_least']}", decision)
        )
    if problem:
        return _result(spec, "not resolved", f"{evidence}; {problem}")
    return _result(spec, decision.verdict, evidence)


def _too_few(values: Sequence[Estimate], seeds: int) -> str | None:
    """With ``seeds`` > 1, a model that has seeds but fewer than two of them in the results (its other
    seeds failed or are missing) cannot be decided: why, as evidence; else None."""
    short = [v for v in values if seeds > 1 and not v.constant and v.n < 2]
    if not short:
        return None
    return "; ".join(f"{v.metric} of {v.model} has only {_seed_list(v)} of {seeds}" for v in short) + ": not resolved"


def check_claim(spec: Mapping, results: pd.DataFrame, *, level: float = DECISION_LEVEL, seeds: int = 1) -> dict:
    """``{"claim", "holds", "verdict", "evidence"}`` for one claim spec on ``results`` (a frame of
    :func:`~dkd.report.seeds.summarise_seeds`, or a plain results frame: one seed per model), decided
    by paired differences at the two-sided confidence ``level`` (see the module docstring); with
    ``seeds`` > 1 (``distill.seeds``) a model with seeds but fewer than two of them leaves it not resolved."""
    kind = spec.get("kind")
    if kind not in KINDS or "claim" not in spec or "backbone" not in spec:
        raise ValueError(f"a claim needs 'claim', 'backbone' and 'kind' in {KINDS}; got {dict(spec)}.")
    level = check_level(level)
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
        if short := _too_few(list(values.values()), seeds):
            return _result(spec, "not resolved", short)
        return _ordered(spec, values, level, any(v.n > 1 for v in values.values()))
    if kind == "ratio":
        top, bottom = get(spec["model"], spec["numerator"]), get(spec["model"], spec["denominator"])
        if top is None or bottom is None:
            return _result(spec, "no data", f"no {spec['numerator']}/{spec['denominator']}")
        if short := _too_few([top, bottom], seeds):
            return _result(spec, "not resolved", short)
        return _ratio(spec, top, bottom, level)
    if kind == "relative":
        ours, ref = get(spec["model"], spec["metric"]), get(spec["reference"], spec["metric"])
        if ours is None or ref is None:
            return _result(spec, "no data", f"no {spec['metric']} for the pair")
        if short := _too_few([ours, ref], seeds):
            return _result(spec, "not resolved", short)
        at_least, factor = spec.get("at_least", False), spec["factor"]
        evidence = (
            f"{spec['metric']}: {spec['model']} {_show(ours)} {'>=' if at_least else '<='} {factor} x "
            f"{spec['reference']} {_show(ref)} = {_fmt(factor * ref.mean)}"
        )
        difference = (lambda o, r: o - factor * r) if at_least else (lambda o, r: factor * r - o)
        decision, problem = _paired(ours, ref, difference, level, "holds")
        if problem:
            return _result(spec, "not resolved", f"{evidence}; {problem}")
        if ours.n > 1 or ref.n > 1:
            evidence += "; " + _difference("difference", decision)
        return _result(spec, decision.verdict, evidence)
    value = get(spec["model"], spec["metric"])
    if value is None:
        return _result(spec, "no data", f"no {spec['metric']} for {spec['model']}")
    if short := _too_few([value], seeds):
        return _result(spec, "not resolved", short)
    ids = sorted(value.seeds)
    if "minimum" in spec:
        differences, evidence = [value.seeds[k] - spec["minimum"] for k in ids], f">= {spec['minimum']}"
    else:
        differences, evidence = [spec["maximum"] - value.seeds[k] for k in ids], f"<= {spec['maximum']}"
    evidence = f"{spec['metric']} {_show(value)} {evidence}"
    problem = _not_finite([value], ids)
    if problem:
        return _result(spec, "not resolved", f"{evidence}; {problem}")
    decision = decide(differences, level=level)
    if value.n > 1:
        evidence += "; " + _difference("difference", decision)
    return _result(spec, decision.verdict, evidence)


def check_claims(
    specs: Sequence[Mapping], results: pd.DataFrame, *, level: float = DECISION_LEVEL, seeds: int = 1
) -> list[dict]:
    """:func:`check_claim` of every spec."""
    return [check_claim(spec, results, level=level, seeds=seeds) for spec in specs]
