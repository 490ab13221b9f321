"""Markdown of the report: one file per table and ``report.md`` (jinja2 templates in ``templates/``).

Tables become GitHub pipe tables through pandas ``to_markdown`` (tabulate) with number parsing
off, so a cell is printed exactly as :func:`dkd.report.tables.build_table` formatted it. Everything
is rendered and checked before the first file is written, and each file is written atomically: a
bad figure or claim loses no earlier report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2

from ..io import atomic_write_text
from .seeds import DECISION_LEVEL, VERDICTS, decision_rule
from .tables import MISSING, Table

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dkd.report", "templates"),
    autoescape=False,  # markdown, not HTML
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
HOLDS = {True: "yes", False: "no", None: MISSING}
VERDICTS_OF = {True: ("holds",), False: ("does not hold",), None: ("not resolved", "no data")}  # by ``holds``


def _cell(text) -> str:
    """A table cell on one line with its pipes escaped (markdown would split the column there)."""
    return re.sub(r"\s*\n\s*", " ", str(text)).replace("|", "\\|")


def _markdown(frame) -> str:
    cells = frame.map(_cell)
    cells.columns = [_cell(c) for c in frame.columns]
    align = ["left" if c in ("Method", "Backbone", "Model", "Evalset") else "right" for c in frame.columns]
    return cells.to_markdown(index=False, tablefmt="pipe", disable_numparse=True, colalign=align)


def _tidy(text: str) -> str:
    """At most one blank line in a row, one newline at the end."""
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def render_table(table: Table) -> str:
    """The markdown of one table: title, table, numbered footnotes and its sources."""
    if not isinstance(table, Table):
        raise ValueError(f"render_table: expected a Table from build_table; got {type(table).__name__}.")
    text = _ENV.get_template("table.md.j2").render(
        title=table.title,
        markdown=_markdown(table.frame),
        footnotes=table.footnotes,
        sources=table.sources,
        paper=table.paper,
        paper_source=table.paper_source,
    )
    return _tidy(text)


def _figures(figures) -> list[dict]:
    if isinstance(figures, (str, Mapping)) or not isinstance(figures, Sequence):
        raise ValueError(f"figures: expected a list of {{caption, path}}; got {figures!r}.")
    checked = []
    for i, figure in enumerate(figures):
        if (
            not isinstance(figure, Mapping)
            or set(figure) != {"caption", "path"}
            or not all(isinstance(figure[k], (str, os.PathLike)) and str(figure[k]).strip() for k in figure)
        ):
            raise ValueError(f"figures[{i}]: expected {{caption: text, path: image path}}; got {figure!r}.")
        path = Path(figure["path"]).as_posix()
        checked.append({"caption": _cell(figure["caption"]), "path": f"<{path}>" if " " in path else path})
    return checked


def _claims(claims, *, verdicts: bool = False) -> str:
    """The claims as a markdown table Claim | Holds | Evidence (yes / no / not resolved / — for no data), or
    Claim | Verdict | Evidence with ``verdicts`` (over seeds: holds / does not hold / not resolved / no
    data); "" when there are none."""
    if isinstance(claims, (str, Mapping)) or not isinstance(claims, Sequence):
        raise ValueError(f"claims: expected a list of {{claim, holds, verdict, evidence}}; got {claims!r}.")
    lines = []
    for i, claim in enumerate(claims):
        if not isinstance(claim, Mapping) or set(claim) - {"verdict"} != {"claim", "holds", "evidence"}:
            raise ValueError(
                f"claims[{i}]: expected the keys claim, holds, evidence and optionally verdict; got {claim!r}."
            )
        if not isinstance(claim["claim"], str) or not claim["claim"].strip():
            raise ValueError(f"claims[{i}]: 'claim' must be a non-empty string; got {claim['claim']!r}.")
        if claim["holds"] not in (True, False, None) or not isinstance(claim["holds"], (bool, type(None))):
            raise ValueError(f"claims[{i}]: 'holds' must be true, false or null; got {claim['holds']!r}.")
        if not isinstance(claim["evidence"], str):
            raise ValueError(f"claims[{i}]: 'evidence' must be a string; got {claim['evidence']!r}.")
        if "verdict" not in claim:  # a claim given without its verdict: from ``holds``
            verdict = MISSING if claim["holds"] is None else VERDICTS_OF[claim["holds"]][0]
        elif (verdict := claim["verdict"]) not in VERDICTS_OF[claim["holds"]]:
            raise ValueError(
                f"claims[{i}]: 'verdict' must be one of {list(VERDICTS)} and agree with 'holds' "
                f"(true: holds, false: does not hold, null: not resolved or no data); got {claim!r}."
            )
        mark = verdict if verdicts or verdict == "not resolved" else HOLDS[claim["holds"]]
        lines.append(f"| {_cell(claim['claim'])} | {mark} | {_cell(claim['evidence']) or MISSING} |")
    if not lines:
        return ""
    return "\n".join([f"| Claim | {'Verdict' if verdicts else 'Holds'} | Evidence |", "|:--|:--:|:--|", *lines])


def render_report(
    tables: Sequence[Table],
    *,
    title: str,
    intro: str,
    figures: Sequence = (),
    claims: Sequence = (),
    seeds: int = 1,
    level: float = DECISION_LEVEL,
    seed_table: Table | None = None,
    downstream: str = "",
) -> str:
    """``report.md``: ``title``, ``intro``, every table (with footnotes and sources), the ``seed_table``
    (:func:`dkd.report.seeds.seed_table`: "Every run over seeds"), the ``figures`` (``[{caption, path}]``,
    paths relative to the report) and the ``claims`` (``[{claim, holds: bool | None, verdict, evidence}]``,
    :func:`dkd.report.claims.check_claims`). With ``seeds`` > 1 the claims table shows each verdict
    under the decision rule, stated above it with its ``level`` (:func:`dkd.report.seeds.decision_rule`).
    ``downstream`` is the Downstream section's markdown (:func:`dkd.report.downstream.render_section`), last."""
    for key, value in (("title", title), ("intro", intro)):
        if not isinstance(value, str) or (key == "title" and not value.strip()):
            raise ValueError(f"render_report: {key!r} must be a{' non-empty' if key == 'title' else ''} string.")
    names = [table.name for table in tables]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"render_report: table name(s) {twice} appear twice; each table has one file.")
    text = _ENV.get_template("report.md.j2").render(
        title=title.strip(),
        intro=intro.strip(),
        tables=[render_table(t) for t in tables],
        seed_table=render_table(seed_table) if seed_table is not None else "",
        figures=_figures(figures),
        claims=_claims(claims, verdicts=seeds > 1),
        rule=decision_rule(seeds, level) if seeds > 1 else "",
        downstream=downstream.strip(),
    )
    return _tidy(text)


def write_report(
    folder: str | os.PathLike,
    tables: Sequence[Table],
    *,
    title: str,
    intro: str,
    figures: Sequence = (),
    claims: Sequence = (),
    table_files: bool = True,
    seeds: int = 1,
    level: float = DECISION_LEVEL,
    seed_table: Table | None = None,
    downstream: str = "",
) -> list[Path]:
    """Write ``<folder>/tables/<name>.md`` per table (unless ``table_files`` is False: the workflow
    renders each table in its own rule) and ``<folder>/report.md`` (:func:`render_report`), atomically;
    all markdown is rendered first, so bad input writes nothing. Returns the paths written."""
    report = render_report(
        tables,
        title=title,
        intro=intro,
        figures=figures,
        claims=claims,
        seeds=seeds,
        level=level,
        seed_table=seed_table,
        downstream=downstream,
    )
    folder = Path(folder)
    written = [
        atomic_write_text(folder / "tables" / f"{table.name}.md", render_table(table))
        for table in (tables if table_files else ())
    ]
    written.append(atomic_write_text(folder / "report.md", report))
    return written
