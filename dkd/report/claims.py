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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from .formats import metric_format

KINDS = ("best", "interior_best", "ratio", "relative", "threshold")


def _value(results: pd.DataFrame, backbone: str, model: str, metric: str, evalset: str | None) -> float | None:
    level = metric_format(metric).model_level
    rows = results[(results["backbone"] == backbone) & (results["model"] == model) & (results["metric"] == metric)]
    rows = rows[rows["evalset"].isna()] if level else rows[rows["evalset"] == evalset]
    return None if rows.empty else float(rows["value"].iloc[0])


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _compare(values: dict, lower: bool) -> str:
    order = sorted(values, key=lambda m: values[m], reverse=not lower)
    return (" < " if lower else " > ").join(f"{m} {_fmt(values[m])}" for m in order)


def check_claim(spec: Mapping, results: pd.DataFrame) -> dict:
    """``{"claim", "holds", "evidence"}`` for one claim spec (see the module docstring)."""
    kind = spec.get("kind")
    if kind not in KINDS or "claim" not in spec or "backbone" not in spec:
        raise ValueError(f"a claim needs 'claim', 'backbone' and 'kind' in {KINDS}; got {dict(spec)}.")
    backbone, evalset = spec["backbone"], spec.get("evalset")

    def get(model: str, metric: str) -> float | None:
        return _value(results, backbone, model, metric, evalset)

    if kind in ("best", "interior_best"):
        metric, lower = spec["metric"], spec.get("lower_is_better", True)
        models = [spec["winner"], *spec["others"]] if kind == "best" else list(spec["models"])
        values = {m: get(m, metric) for m in models}
        missing = [m for m, v in values.items() if v is None]
        if missing:
            return {"claim": spec["claim"], "holds": None, "evidence": f"no {metric} for {', '.join(missing)}"}
        best = (min if lower else max)(values, key=values.get)
        holds = best == spec["winner"] if kind == "best" else best not in (models[0], models[-1])
        return {"claim": spec["claim"], "holds": holds, "evidence": f"{metric}: {_compare(values, lower)}"}
    if kind == "ratio":
        top, bottom = get(spec["model"], spec["numerator"]), get(spec["model"], spec["denominator"])
        if top is None or bottom is None:
            return {"claim": spec["claim"], "holds": None, "evidence": f"no {spec['numerator']}/{spec['denominator']}"}
        ratio = top / bottom if bottom else float("inf")
        return {
            "claim": spec["claim"],
            "holds": ratio >= spec["at_least"],
            "evidence": f"{spec['numerator']} {_fmt(top)} / {spec['denominator']} {_fmt(bottom)} = {_fmt(ratio)} "
            f"(needs >= {spec['at_least']})",
        }
    if kind == "relative":
        ours, ref = get(spec["model"], spec["metric"]), get(spec["reference"], spec["metric"])
        if ours is None or ref is None:
            return {"claim": spec["claim"], "holds": None, "evidence": f"no {spec['metric']} for the pair"}
        bound = spec["factor"] * ref
        holds = ours >= bound if spec.get("at_least", False) else ours <= bound
        sign = ">=" if spec.get("at_least", False) else "<="
        return {
            "claim": spec["claim"],
            "holds": holds,
            "evidence": f"{spec['metric']}: {spec['model']} {_fmt(ours)} {sign} {spec['factor']} x "
            f"{spec['reference']} {_fmt(ref)} = {_fmt(bound)}",
        }
    value = get(spec["model"], spec["metric"])
    if value is None:
        return {"claim": spec["claim"], "holds": None, "evidence": f"no {spec['metric']} for {spec['model']}"}
    if "minimum" in spec:
        return {
            "claim": spec["claim"],
            "holds": value >= spec["minimum"],
            "evidence": f"{spec['metric']} {_fmt(value)} >= {spec['minimum']}",
        }
    return {
        "claim": spec["claim"],
        "holds": value <= spec["maximum"],
        "evidence": f"{spec['metric']} {_fmt(value)} <= {spec['maximum']}",
    }


def check_claims(specs: Sequence[Mapping], results: pd.DataFrame) -> list[dict]:
    return [check_claim(spec, results) for spec in specs]
