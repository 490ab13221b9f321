"""Results over seeds: the mean and standard error of each number over the seeds of a model, and the
rule that decides a claim from them.

A run, merge or swapped model ``<name>`` trained with ``distill.seeds: N`` is also trained and
evaluated as ``<name>-seed1`` ... ``<name>-seed{N-1}`` (:func:`dkd.vocabulary.split_seed`).
:func:`summarise_seeds` folds those rows into one row of ``<name>``: the mean over the seeds, its
standard error (sample standard deviation / √n), n, the values per seed and every file. A claim
is decided from the difference of such means and the standard error of that difference
(:func:`decide`, :func:`difference_se`); :func:`seed_table` shows every seed's number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..vocabulary import split_seed
from .formats import format_value, metric_format
from .results import RESULT_COLUMNS, as_number

KEY = ["backbone", "model", "evalset", "metric"]
SUMMARY_COLUMNS = (*KEY, "value", "se", "n", "seed_ids", "seed_values", "source")
SOURCE_SEPARATOR = "; "  # between the files of one summarised value
VERDICTS = ("holds", "does not hold", "not resolved", "no data")


def _split(model: str) -> tuple[str, int]:
    """``(base model, K)``; a name outside the vocabulary (``dkd.vocabulary.model_kind``) has no seeds."""
    try:
        return split_seed(model)
    except ValueError:
        return model, 0


def _check_seeds(seeds) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1; got {seeds!r}.")
    return seeds


def check_z(z) -> float:
    """``z`` (the standard errors a difference must exceed) as a float; one clear error unless finite and > 0."""
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not math.isfinite(z) or z <= 0:
        raise ValueError(f"z must be a finite number > 0; got {z!r}.")
    return float(z)


def summarise_seeds(results: pd.DataFrame, seeds: int) -> pd.DataFrame:
    """One row per (backbone, base model, evalset, metric) of ``results`` (a frame of
    :func:`~dkd.report.results.read_results`): the rows of ``<base>`` and ``<base>-seed{K}`` with
    K < ``seeds`` (rows of K >= ``seeds`` are dropped), as columns backbone, model (the base), evalset,
    metric, value (the mean over the seeds; a single seed's value as written), se (the sample standard
    deviation, ddof 1, / √n; NaN for n = 1), n, seed_ids (the K, ascending), seed_values (in that order)
    and source (the files, joined by ``"; "``). Text values are kept for one seed only; text over
    several seeds, or one seed given twice, is one ``ValueError``. Rows keep the order of ``results``
    (by their first seed), so ``seeds = 1`` gives the rows of ``results`` without the seeded ones."""
    seeds = _check_seeds(seeds)
    missing = sorted(set(RESULT_COLUMNS) - set(results.columns))
    if missing:
        raise ValueError(f"summarise_seeds: the results lack column(s) {missing}; expected {list(RESULT_COLUMNS)}.")
    split = [_split(model) for model in results["model"]]
    frame = results[list(RESULT_COLUMNS)].assign(
        model=pd.Series([base for base, _ in split], index=results.index, dtype=object),
        seed=[k for _, k in split],
        number=results["value"].map(as_number),
    )
    frame = frame[frame["seed"] < seeds].sort_values("seed", kind="stable")
    frame["number"] = frame["number"].astype(float)  # None (text) -> NaN
    twice = frame[frame.duplicated([*KEY, "seed"])]
    if not twice.empty:
        row = twice.iloc[0]
        raise ValueError(
            f"seed {row['seed']} of {row['model']!r} ({row['backbone']}, evalset {row['evalset']!r}) gives "
            f"{row['metric']!r} twice (one in {row['source']})."
        )
    frame["group"] = frame.groupby(KEY, dropna=False, sort=False).ngroup()
    stats = frame.groupby("group").agg(
        n=("seed", "size"),
        seed_ids=("seed", tuple),
        seed_values=("value", tuple),
        source=("source", SOURCE_SEPARATOR.join),
        numbers=("number", "count"),
        mean=("number", "mean"),
        std=("number", "std"),  # ddof = 1
    )
    text = stats[(stats["n"] > 1) & (stats["numbers"] < stats["n"])]
    if not text.empty:
        row = frame[frame["group"] == text.index[0]].iloc[0]
        raise ValueError(
            f"{row['metric']!r} of {row['model']!r} ({row['backbone']}, evalset {row['evalset']!r}) is text in "
            f"some of its {text['n'].iloc[0]} seeds ({text['source'].iloc[0]}): only numbers have a mean over seeds."
        )
    out = frame.drop_duplicates("group").set_index("group")[[*KEY, "value"]].join(stats)
    out["value"] = out["value"].where(out["n"] == 1, out["mean"]).astype(object)
    out["se"] = (out["std"] / np.sqrt(out["n"])).astype(float)
    out["source"] = out["source"].astype(object)
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """The mean of ``values`` and its standard error, sample standard deviation (ddof 1) / √n (NaN for one value)."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        raise ValueError("mean_se: no values.")
    with np.errstate(invalid="ignore"):  # an infinite value (a ratio over 0) has no spread
        se = float(np.std(array, ddof=1) / math.sqrt(array.size)) if array.size > 1 else math.nan
    return float(np.mean(array)), se


def difference_se(*ses: float) -> float:
    """The standard error of a difference of independent means, √(Σ se²); a NaN se (one seed) counts as 0."""
    return math.sqrt(sum(0.0 if se is None or math.isnan(se) else se * se for se in ses))


def decide(difference: float, se: float, *, z: float) -> str:
    """The verdict on a claim from a ``difference`` of means oriented so that a positive one favours the
    claim, and the standard error ``se`` of that difference: the claim "holds" when the difference
    favours it by more than ``z`` standard errors (difference > z·se), "does not hold" when it goes
    against it by as much (difference < −z·se), and is "not resolved" otherwise. With se 0 or NaN (one
    seed) that is a plain comparison: > 0 holds, < 0 does not hold, 0 is not resolved."""
    z = check_z(z)
    if se is not None and not math.isnan(se) and se < 0:
        raise ValueError(f"a standard error is >= 0; got {se!r}.")
    margin = 0.0 if se is None or math.isnan(se) else z * se
    if difference > margin:
        return "holds"
    if difference < -margin:
        return "does not hold"
    return "not resolved"


def decision_rule(seeds: int, z: float) -> str:
    """The rule of :func:`decide` in one sentence, as the report states it above the claims."""
    return (
        f"A claim holds when the difference of the means over {_check_seeds(seeds)} seeds favours it by more "
        f"than {check_z(z):g} standard errors of that difference, does not hold when it goes against it by as "
        "much, and is not resolved otherwise."
    )


def format_mean(value, se: float, decimals: int | None) -> str:
    """``value`` as :func:`~dkd.report.formats.format_value` prints it, followed by "± se" (same decimals)
    when ``se`` is a number (a mean over seeds; NaN: one seed)."""
    if se is None or math.isnan(se):
        return format_value(value, decimals)
    return f"{format_value(value, decimals)} ± {format_value(se, decimals)}"


def seed_note(n: int) -> str:
    """The footnote of a cell that is a mean over ``n`` seeds."""
    return f"mean ± standard error over {n} seeds"


def split_sources(source: str) -> list[str]:
    """The files of a summarised ``source``."""
    return source.split(SOURCE_SEPARATOR)


def seed_table(results: pd.DataFrame, seeds: int, *, metric: str = "fid", low: str = "fid_low", high: str = "fid_high"):
    """The table "Every run over seeds" (a :class:`~dkd.report.tables.Table`, None when no model has
    several seeds): one row per (backbone, base model, evalset) whose ``metric`` has n > 1 seeds in
    ``results`` (a frame of :func:`~dkd.report.results.read_results`), one column per seed with the
    value and, where the seed's result has both, its bootstrap interval ``[low, high]``, then "mean ± SE"."""
    from .tables import MISSING, Table  # tables imports this module

    summary = summarise_seeds(results, seeds)
    shown = summary[(summary["metric"] == metric) & (summary["n"] > 1)]
    if shown.empty:
        return None
    bounds = {
        (row.backbone, row.model, row.evalset, row.metric): (dict(zip(row.seed_ids, row.seed_values)), row.source)
        for row in summary[summary["metric"].isin([low, high])].itertuples(index=False)
    }
    fmt = metric_format(metric)
    records, sources = [], set()
    for row in shown.itertuples(index=False):
        record = {
            "Backbone": row.backbone,
            "Model": row.model,
            "Evalset": MISSING if row.evalset is None else row.evalset,
        }
        values = dict(zip(row.seed_ids, row.seed_values))
        lows, low_files = bounds.get((row.backbone, row.model, row.evalset, low), ({}, None))
        highs, high_files = bounds.get((row.backbone, row.model, row.evalset, high), ({}, None))
        for k in range(seeds):
            cell = format_value(values[k], fmt.decimals) if k in values else MISSING
            if k in values and k in lows and k in highs:
                cell += f" [{format_value(lows[k], fmt.decimals)}, {format_value(highs[k], fmt.decimals)}]"
            record[f"Seed {k}" + (" [1]" if k == 0 else "")] = cell
        record["Mean ± SE [2]"] = format_mean(row.value, row.se, fmt.decimals)
        records.append(record)
        sources.update(split_sources(row.source))
        sources.update(file for files in (low_files, high_files) if files for file in split_sources(files))
    notes = (
        f"{fmt.header} of seed K, the model trained with its settings' seed + K; in brackets its bootstrap "
        f"interval over the generated images ({low}, {high}) where its result file has one",
        "mean ± standard error (sample standard deviation / √n) over the n seeds shown",
    )
    frame = pd.DataFrame(records, dtype=object)
    return Table(
        name="seeds", title="Every run over seeds", frame=frame, footnotes=notes, sources=tuple(sorted(sources))
    )
