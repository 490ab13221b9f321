"""Results over seeds: the mean and standard error of each number over the seeds of a model, and the
rule that decides a claim from them.

A run, merge or swapped model ``<name>`` trained with ``distill.seeds: N`` is also trained and
evaluated as ``<name>-seed1`` ... ``<name>-seed{N-1}`` (:func:`dkd.vocabulary.split_seed`).
:func:`summarise_seeds` folds those rows into one row of ``<name>``: the mean over the seeds, its
standard error (sample standard deviation / √n, :func:`mean_se`), n, the values per seed and every
file. A claim is decided from its differences paired by seed (seed K of every model shares the prompt
order, the training noise and the evaluation noise) by Student's t (:func:`decide`, stated by
:func:`decision_rule`); :func:`seed_table` shows every seed's number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..vocabulary import split_seed, with_seed
from .formats import format_value, metric_format
from .results import RESULT_COLUMNS

KEY = ["backbone", "model", "evalset", "metric"]
SUMMARY_COLUMNS = (*KEY, "value", "se", "n", "seed_ids", "seed_values", "source")
SOURCE_SEPARATOR = "; "  # between the files of one summarised value
VERDICTS = ("holds", "does not hold", "not resolved", "no data")
DECISION_LEVEL = 0.95  # the default of report.decision.level (workflow/schemas/config.schema.yaml)


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


def has_seeds(model: str) -> bool:
    """Whether ``model`` (a name without a seed suffix) is trained over seeds: a run, merge or swapped run
    or merge (:func:`dkd.vocabulary.with_seed`); a teacher, a published model or a name outside the
    vocabulary has none."""
    try:
        with_seed(model, 1)
    except ValueError:
        return False
    return True


def check_level(level) -> float:
    """``level`` (the two-sided confidence of :func:`decide`) as a float; one clear error unless 0 < level < 1."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number between 0 and 1 (e.g. 0.95); got {level!r}.")
    return float(level)


def critical_t(n: int, level: float = DECISION_LEVEL) -> float:
    """The two-sided ``level`` critical value of Student's t with n − 1 degrees of freedom (n >= 2),
    ``scipy.stats.t.ppf(1 − (1 − level) / 2, n − 1)``: 2.776 for n = 5 at 0.95."""
    from scipy import stats

    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"critical_t: n must be a whole number >= 2; got {n!r}.")
    return float(stats.t.ppf(1 - (1 - check_level(level)) / 2, n - 1))


def bonferroni(level: float, m: int) -> float:
    """The level of each of ``m`` comparisons that keeps ``level`` for all of them: 1 − (1 − level) / m."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"bonferroni: m must be a whole number >= 1; got {m!r}.")
    return 1 - (1 - check_level(level)) / m


def _number(value) -> float | None:
    """``value`` as a float, non-finite ones included (a diverged seed's NaN or inf FID, also written as
    text "nan"); None for real text, None and bools."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def summarise_seeds(results: pd.DataFrame, seeds: int) -> pd.DataFrame:
    """One row per (backbone, base model, evalset, metric) of ``results`` (a frame of
    :func:`~dkd.report.results.read_results`): the rows of ``<base>`` and ``<base>-seed{K}`` with
    K < ``seeds`` (rows of K >= ``seeds`` are dropped), as columns backbone, model (the base), evalset,
    metric, value (the mean over the seeds; a single seed's value as written), se (the sample standard
    deviation, ddof 1, / √n: :func:`mean_se`; NaN for n = 1), n, seed_ids (the K, ascending), seed_values
    (in that order) and source (the files, joined by ``"; "``). A non-finite number (a diverged seed's
    NaN or inf, also as the text "nan") makes the mean NaN or inf and the SE NaN. Text values are kept
    for one seed only; text over several seeds, or one seed given twice, is one ``ValueError``. Rows keep
    the order of ``results`` (by their first seed), so ``seeds = 1`` gives the rows of ``results``
    without the seeded ones."""
    seeds = _check_seeds(seeds)
    missing = sorted(set(RESULT_COLUMNS) - set(results.columns))
    if missing:
        raise ValueError(f"summarise_seeds: the results lack column(s) {missing}; expected {list(RESULT_COLUMNS)}.")
    split = [_split(model) for model in results["model"]]
    frame = results[list(RESULT_COLUMNS)].assign(
        model=pd.Series([base for base, _ in split], index=results.index, dtype=object),
        seed=[k for _, k in split],
        number=results["value"].map(_number),
    )
    frame = frame[frame["seed"] < seeds].sort_values("seed", kind="stable")
    frame["text"] = frame["value"].map(lambda value: _number(value) is None)  # real text, not a NaN number
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
        texts=("text", "sum"),
    )
    spread = {group: mean_se(numbers) for group, numbers in frame.groupby("group")["number"]}
    stats["mean"] = [spread[group][0] for group in stats.index]
    stats["se"] = [spread[group][1] for group in stats.index]
    text = stats[(stats["n"] > 1) & (stats["texts"] > 0)]
    if not text.empty:
        row = frame[frame["group"] == text.index[0]].iloc[0]
        raise ValueError(
            f"{row['metric']!r} of {row['model']!r} ({row['backbone']}, evalset {row['evalset']!r}) is text in "
            f"some of its {text['n'].iloc[0]} seeds ({text['source'].iloc[0]}): only numbers have a mean over seeds."
        )
    out = frame.drop_duplicates("group").set_index("group")[[*KEY, "value"]].join(stats)
    out["value"] = out["value"].where(out["n"] == 1, out["mean"]).astype(object)
    out["se"] = out["se"].astype(float)
    out["source"] = out["source"].astype(object)
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """The mean of ``values`` and its standard error, sample standard deviation (ddof 1) / √n (NaN for one value)."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        raise ValueError("mean_se: no values.")
    with np.errstate(invalid="ignore"):  # a non-finite value (a diverged seed, a ratio over 0): NaN or inf
        se = float(np.std(array, ddof=1) / math.sqrt(array.size)) if array.size > 1 else math.nan
        return float(np.mean(array)), se


@dataclass(frozen=True)
class Decision:
    """The verdict of :func:`decide` with its numbers: the ``mean`` of the ``n`` per-seed differences,
    its standard error ``se`` and the critical value ``t`` (both NaN for n = 1: a plain comparison)."""

    verdict: str
    mean: float
    se: float
    n: int
    t: float

    @property
    def margin(self) -> float:
        """t·SE, the distance from 0 the mean must exceed (0 for one value)."""
        return 0.0 if self.n == 1 else self.t * self.se


def decide(differences: Iterable[float], *, level: float = DECISION_LEVEL, tie: str = "holds") -> Decision:
    """The verdict on a claim from its ``differences`` per seed, paired by seed and oriented so that a
    positive one favours the claim: with their mean d̄, its standard error SE (sample standard deviation /
    √n) and t the two-sided ``level`` critical value of Student's t with n − 1 degrees of freedom
    (:func:`critical_t`), the claim "holds" when d̄ > t·SE, "does not hold" when d̄ < −t·SE and is "not
    resolved" otherwise. One difference is the plain comparison: > 0 holds, < 0 does not hold, and an
    exact 0 gives ``tie`` ("holds" or "does not hold": how the comparison counts equality), and ±inf its
    sign. A NaN difference, or a non-finite one among several, is "not resolved"."""
    array = np.asarray(list(differences), dtype=float)
    level = check_level(level)
    if array.size == 0:
        raise ValueError("decide: no differences.")
    if tie not in ("holds", "does not hold"):
        raise ValueError(f"decide: tie must be 'holds' or 'does not hold'; got {tie!r}.")
    mean, se = mean_se(array)
    t = critical_t(int(array.size), level) if array.size > 1 else math.nan
    margin = t * se if array.size > 1 else 0.0
    if np.isnan(array).any() or (array.size > 1 and not np.isfinite(array).all()):
        verdict = "not resolved"
    elif mean > margin:
        verdict = "holds"
    elif mean < -margin:
        verdict = "does not hold"
    else:
        verdict = tie if array.size == 1 else "not resolved"  # one value: exactly 0
    return Decision(verdict, mean, se, int(array.size), t)


def decision_rule(seeds: int, level: float = DECISION_LEVEL) -> str:
    """The rule of :func:`decide` in one sentence, as the report states it above the claims (seeds > 1)."""
    seeds, level = _check_seeds(seeds), check_level(level)
    if seeds == 1:
        return "With one seed a claim is the plain comparison of the numbers."
    return (
        f"A claim holds when the mean of its per-seed differences over {seeds} seeds (models paired by seed) "
        f"favours it by more than t = {critical_t(seeds, level):.2f} standard errors (Student's t, "
        f"{level * 100:.4g}% two-sided, {seeds - 1} degree{'s' if seeds > 2 else ''} of freedom; Bonferroni over "
        "the interior models of an interior-best claim), does not hold when it goes against it by as much, and "
        "is not resolved otherwise."
    )


def shows_mean(n: int, se: float) -> bool:
    """Whether a cell of ``n`` seeds with standard error ``se`` is shown as a mean: n > 1 and the seeds
    differ (SE 0: every seed gives the same value, shown alone)."""
    return n > 1 and not se == 0


def format_mean(value, se: float, decimals: int | None) -> str:
    """``value`` as :func:`~dkd.report.formats.format_value` prints it, followed by "± se" (same decimals)
    when ``se`` is a number other than 0 (a mean over seeds; NaN: one seed or a non-finite seed; 0: the
    same value at every seed, printed alone)."""
    if se is None or math.isnan(se) or se == 0:
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
        f"mean ± standard error (sample standard deviation / √n) over the n seeds shown (seeds 0–{seeds - 1}; "
        f"a result of seed {seeds} or later is not used); a number alone: every seed gives it",
    )
    frame = pd.DataFrame(records, dtype=object)
    return Table(
        name="seeds", title="Every run over seeds", frame=frame, footnotes=notes, sources=tuple(sorted(sources))
    )
