"""One report table: our numbers beside the paper's, in the paper's layout.

A :class:`TableSpec` (one entry of the workflow config's report tables) names the paper table, the
metric columns and the rows; each row joins the paper by its label (results.csv ``method``) and
backbone, and our results by (backbone, model, evalset) — evalset None for model-level metrics
(:data:`dkd.report.formats.METRICS`). :func:`build_table` turns a spec and the two DataFrames of
:mod:`dkd.report.results` into a :class:`Table` of formatted cells: "ours | paper | Δ" per metric
(only "ours" without a paper table). A cell that cannot be filled is "—" with a footnote saying why;
identical reasons share one footnote. Over several seeds (results of
:func:`dkd.report.seeds.summarise_seeds`) our cell is "mean ± SE", footnoted with the number of
seeds (the value alone when every seed gives it). Nothing is filled in by hand: every number of ours
comes from a result file (listed in ``Table.sources``) or, marked as such, from a setting in the spec.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import pandas as pd

from .formats import format_delta, metric_format
from .results import as_number
from .seeds import format_mean, seed_note, shows_mean, split_sources

MISSING = "—"
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _text(where: str, key: str, value, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be a non-empty string; got {value!r}.")
    return value


def _check_keys(where: str, data, required: set, optional: set) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping; got {data!r}.")
    missing, unknown = sorted(required - set(data)), sorted(set(data) - required - optional)
    if missing or unknown:
        raise ValueError(
            f"{where}: missing key(s) {missing}, unknown key(s) {unknown}; allowed: {sorted(required | optional)}."
        )


@dataclass(frozen=True)
class RowSpec:
    """One row: ``label`` (= results.csv ``method``), ``backbone``, our ``model`` and ``evalset``
    (None: model-level values only / a paper-only row), configured ``values`` (settings such as
    ``{nfe: 1}``, shown as ours and marked) and a free ``note`` (footnoted on the label)."""

    label: str
    backbone: str
    model: str | None = None
    evalset: str | None = None
    values: Mapping = field(default_factory=dict)
    note: str | None = None

    def __post_init__(self):
        where = f"row {self.label!r}"
        _text("row", "label", self.label)
        _text(where, "backbone", self.backbone)
        _text(where, "model", self.model, optional=True)
        _text(where, "evalset", self.evalset, optional=True)
        _text(where, "note", self.note, optional=True)
        if not isinstance(self.values, Mapping):
            raise ValueError(f"{where}: 'values' must be a mapping metric -> value; got {self.values!r}.")
        for metric, value in self.values.items():
            if isinstance(value, bool) or (as_number(value) is None and not (isinstance(value, str) and value.strip())):
                raise ValueError(f"{where}: values[{metric!r}] must be a finite number or text; got {value!r}.")
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    @classmethod
    def from_dict(cls, data: Mapping, *, where: str = "row") -> RowSpec:
        """A row from its config mapping; unknown or missing keys are one ``ValueError``."""
        _check_keys(where, data, {"label", "backbone"}, {"model", "evalset", "values", "note"})
        try:
            return cls(**data)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None


@dataclass(frozen=True)
class TableSpec:
    """One table: file ``name``, ``title``, metric ``columns``, ``rows`` and the ``paper`` table
    (results.csv ``table``; None for tables the paper does not have)."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[RowSpec, ...]
    paper: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not FILE_NAME.match(self.name):
            raise ValueError(f"table {self.name!r}: a table name is letters, digits, '_', '.' and '-'.")
        where = f"table {self.name!r}"
        _text(where, "title", self.title)
        _text(where, "paper", self.paper, optional=True)
        if isinstance(self.columns, str) or not self.columns:
            raise ValueError(f"{where}: 'columns' must be a non-empty list of metric names.")
        columns = tuple(self.columns)
        for column in columns:
            _text(where, "columns[]", column)
        if len(set(columns)) != len(columns):
            raise ValueError(f"{where}: a metric is listed twice in 'columns' {list(columns)}.")
        rows = tuple(self.rows) if not isinstance(self.rows, (str, Mapping)) else ()
        if not rows or not all(isinstance(row, RowSpec) for row in rows):
            raise ValueError(f"{where}: 'rows' must be a non-empty list of rows.")
        keys = [(row.label, row.backbone) for row in rows]
        for row in rows:
            if keys.count((row.label, row.backbone)) > 1:
                raise ValueError(f"{where}: row {row.label!r} on {row.backbone!r} is listed twice.")
            extra = sorted(set(row.values) - set(columns))
            if extra:
                raise ValueError(
                    f"{where}, row {row.label!r}: configured values {extra} are not columns {list(columns)}."
                )
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "rows", rows)

    @classmethod
    def from_dict(cls, name: str, data: Mapping) -> TableSpec:
        """A table from its config mapping (keys title, columns, rows, optional paper)."""
        where = f"table {name!r}"
        _check_keys(where, data, {"title", "columns", "rows"}, {"paper"})
        rows = data["rows"]
        if isinstance(rows, (str, Mapping)) or not isinstance(rows, (list, tuple)):
            raise ValueError(f"{where}: 'rows' must be a list of rows; got {rows!r}.")
        parsed = tuple(RowSpec.from_dict(row, where=f"{where}, row {i + 1}") for i, row in enumerate(rows))
        columns = data["columns"]
        if not isinstance(columns, (list, tuple)):
            raise ValueError(f"{where}: 'columns' must be a list of metric names; got {columns!r}.")
        return cls(name=name, title=data["title"], columns=tuple(columns), rows=parsed, paper=data.get("paper"))


def table_specs(config: Mapping[str, Mapping]) -> list[TableSpec]:
    """Every table of a config mapping ``{name: {title, paper, columns, rows}}``, in order."""
    if not isinstance(config, Mapping):
        raise ValueError(f"report tables: expected a mapping of table name -> spec; got {config!r}.")
    return [TableSpec.from_dict(name, data) for name, data in config.items()]


@dataclass(frozen=True)
class Table:
    """A built table: ``frame`` of formatted cells (strings), ``footnotes`` (footnote ``i + 1`` is
    ``footnotes[i]``), ``sources`` (our result files used) and the paper's file and table."""

    name: str
    title: str
    frame: pd.DataFrame
    footnotes: tuple[str, ...]
    sources: tuple[str, ...]
    paper: str | None = None
    paper_source: str | None = None


class _Footnotes:
    """Numbers reasons in order of first use; the same reason gets the same number."""

    def __init__(self):
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"


def _lookup_text(backbone: str, model: str, evalset: str | None) -> str:
    where = "null (model-level value)" if evalset is None else repr(evalset)
    return f"backbone={backbone!r}, model={model!r}, evalset={where}"


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _index_results(results: pd.DataFrame) -> tuple[dict, dict]:
    """(backbone, model, evalset) -> {metric: (value, source, se, n)} and -> sorted source files (se NaN
    and n 1 without the columns of a summary over seeds)."""
    values: dict[tuple, dict] = {}
    files: dict[tuple, set] = {}
    for row in results.itertuples(index=False):
        key = (row.backbone, row.model, None if _is_missing(row.evalset) else row.evalset)
        spread = getattr(row, "se", math.nan), getattr(row, "n", 1)
        values.setdefault(key, {})[row.metric] = (row.value, row.source, *spread)
        files.setdefault(key, set()).update(split_sources(row.source))
    return values, {key: sorted(found) for key, found in files.items()}


def _paper_rows(spec: TableSpec, paper: pd.DataFrame | None) -> tuple[dict, set, str | None]:
    """(backbone, method) -> {metric: text or None} of the spec's paper table, its metrics and file."""
    if spec.paper is None:
        return {}, set(), None
    if paper is None:
        raise ValueError(f"table {spec.name!r}: paper table {spec.paper!r} is set but no paper results were given.")
    part = paper[paper["table"] == spec.paper]
    if part.empty:
        known = sorted(set(paper["table"]))
        raise ValueError(
            f"table {spec.name!r}: paper table {spec.paper!r} is not in the paper's results; tables there: {known}."
        )
    rows: dict[tuple, dict] = {}
    for row in part.itertuples(index=False):
        rows.setdefault((row.backbone, row.method), {})[row.metric] = None if _is_missing(row.value) else row.value
    return rows, set(part["metric"]), ", ".join(sorted(set(part["source"])))


def _row_note(spec: TableSpec, row: RowSpec, reasons: Mapping[tuple[str, str, str], str]) -> str | None:
    """The footnote of a row's label: its own note, or the reason its paper row has no checkpoint (a row
    with a model of ours, e.g. our retraining of a baseline without public weights, has its own note)."""
    reason = reasons.get((spec.paper, row.backbone, row.label)) if spec.paper and row.model is None else None
    if reason and row.note:
        raise ValueError(
            f"table {spec.name!r}, row {row.label!r} ({row.backbone}): both a note and the reason of the "
            "published-checkpoint list (config/published.yaml); give the reason there only."
        )
    return row.note or reason


def build_table(
    spec: TableSpec,
    results: pd.DataFrame,
    paper: pd.DataFrame | None = None,
    reasons: Mapping[tuple[str, str, str], str] | None = None,
) -> Table:
    """The cells of ``spec`` from our ``results`` and the ``paper`` (DataFrames of
    :func:`~dkd.report.results.read_results` / :func:`~dkd.report.results.read_paper`). ``reasons``
    (``dkd.sampling.unavailable_reasons``: ``{(paper table, backbone, method): reason}``) footnote the
    rows without a runnable checkpoint; a row's own ``note`` may not repeat one."""
    ours_index, files_index = _index_results(results)
    paper_rows, paper_metrics, paper_source = _paper_rows(spec, paper)
    notes = _Footnotes()
    sources: set[str] = set()
    with_paper = spec.paper is not None
    records = []
    for row in spec.rows:
        note = _row_note(spec, row, reasons or {})
        record = {"Method": row.label + (f" {notes.mark(note)}" if note else "")}
        if len({r.backbone for r in spec.rows}) > 1:
            record["Backbone"] = row.backbone
        for metric in spec.columns:
            fmt = metric_format(metric)
            ours, ours_marks, se = _ours(spec, row, metric, fmt, ours_index, files_index, notes, sources)
            cell = MISSING if ours is None else format_mean(ours, se, fmt.decimals)
            if not with_paper:
                record[fmt.header] = f"{cell} {ours_marks}".rstrip()
                continue
            record[f"{fmt.header} ours"] = f"{cell} {ours_marks}".rstrip()
            printed, paper_marks = _paper(spec, row, metric, paper_rows, paper_metrics, notes)
            record[f"{fmt.header} paper"] = printed if printed is not None else f"{MISSING} {paper_marks}"
            record[f"{fmt.header} Δ"] = _delta(ours, printed, fmt, ours_marks, paper_marks, notes)
        records.append(record)
    frame = pd.DataFrame(records, dtype=object)
    return Table(
        name=spec.name,
        title=spec.title,
        frame=frame,
        footnotes=tuple(notes.reasons),
        sources=tuple(sorted(sources)),
        paper=spec.paper,
        paper_source=paper_source,
    )


def _ours(spec, row, metric, fmt, ours_index, files_index, notes, sources):
    """Our value of ``metric`` in ``row``, the footnote marks of its cell and its standard error over seeds
    (NaN: one seed or not a measurement)."""
    if row.model is None:
        if metric in row.values:
            return row.values[metric], notes.mark("a setting configured in the table spec, not a measurement"), math.nan
        return None, notes.mark("no model of ours is configured for this row"), math.nan
    key = (row.backbone, row.model, None if fmt.model_level else row.evalset)
    found = ours_index.get(key, {}).get(metric)
    if metric in row.values:
        if found is not None:
            raise ValueError(
                f"table {spec.name!r}, row {row.label!r}: {metric!r} is configured in the spec "
                f"and also measured in {found[1]}; keep one."
            )
        return row.values[metric], notes.mark("a setting configured in the table spec, not a measurement"), math.nan
    if key not in files_index:
        return None, notes.mark(f"no result file for {_lookup_text(*key)}"), math.nan
    if found is None:
        names = ", ".join(files_index[key])
        return None, notes.mark(f"the result file(s) {names} for {_lookup_text(*key)} have no {metric!r}"), math.nan
    value, source, se, n = found
    sources.update(split_sources(source))
    return value, notes.mark(seed_note(n)) if shows_mean(n, se) else "", se  # SE 0: every seed's value


def _paper(spec, row, metric, paper_rows, paper_metrics, notes):
    """The paper's printed value of ``metric`` in ``row`` (None if absent) and the marks of its cell."""
    values = paper_rows.get((row.backbone, row.label))
    if values is None:
        return None, notes.mark(
            f"the paper's table {spec.paper!r} has no row {row.label!r} on backbone {row.backbone!r}"
        )
    if metric not in paper_metrics:
        return None, notes.mark(f"the paper's table {spec.paper!r} has no {metric!r} column")
    if values.get(metric) is None:
        return None, notes.mark('the paper prints no value here ("-" or blank)')
    return values[metric], ""


def _delta(ours, printed, fmt, ours_marks, paper_marks, notes) -> str:
    """Δ = ours − paper, or "—" with the marks of the missing side(s)."""
    if ours is None or printed is None:
        marks = (ours_marks if ours is None else "") + (paper_marks if printed is None else "")
        numbers = sorted({int(n) for n in re.findall(r"\[(\d+)\]", marks)})
        return f"{MISSING} " + "".join(f"[{n}]" for n in numbers)
    ours_number, paper_number = as_number(ours), as_number(printed)
    if fmt.decimals is None or ours_number is None or paper_number is None or isinstance(ours, str):
        return f"{MISSING} {notes.mark('no difference: one side is text, not a number')}"
    delta = format_delta(ours_number, paper_number, fmt.decimals)
    return f"{delta} {notes.mark(fmt.caveat)}" if fmt.caveat else delta
