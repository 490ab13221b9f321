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


def _cell(text) -> str:
    """A table cell on one line with its pipes escaped (markdown would split the column there)."""
    return re.sub(r"\s*\n\s*", " ", str(text)).replace("|", "\\|")


def _markdown(frame) -> str:
    cells = frame.map(_cell)
    cells.columns = [_cell(c) for c in frame.columns]
    align = ["left" if c in ("Method", "Backbone") else "right" for c in frame.columns]
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


def _claims(claims) -> str:
    """The claims as a markdown table Claim | Holds | Evidence ("" when there are none)."""
    if isinstance(claims, (str, Mapping)) or not isinstance(claims, Sequence):
        raise ValueError(f"claims: expected a list of {{claim, holds, evidence}}; got {claims!r}.")
    lines = []
    for i, claim in enumerate(claims):
        if not isinstance(claim, Mapping) or set(claim) != {"claim", "holds", "evidence"}:
            raise ValueError(f"claims[{i}]: expected exactly the keys claim, holds, evidence; got {claim!r}.")
        if not isinstance(claim["claim"], str) or not claim["claim"].strip():
            raise ValueError(f"claims[{i}]: 'claim' must be a non-empty string; got {claim['claim']!r}.")
        if claim["holds"] not in (True, False, None) or not isinstance(claim["holds"], (bool, type(None))):
            raise ValueError(f"claims[{i}]: 'holds' must be true, false or null; got {claim['holds']!r}.")
        if not isinstance(claim["evidence"], str):
            raise ValueError(f"claims[{i}]: 'evidence' must be a string; got {claim['evidence']!r}.")
        lines.append(f"| {_cell(claim['claim'])} | {HOLDS[claim['holds']]} | {_cell(claim['evidence']) or MISSING} |")
    if not lines:
        return ""
    return "\n".join(["| Claim | Holds | Evidence |", "|:--|:--:|:--|", *lines])


def render_report(
    tables: Sequence[Table], *, title: str, intro: str, figures: Sequence = (), claims: Sequence = ()
) -> str:
    """``report.md``: ``title``, ``intro``, every table (with footnotes and sources), the
    ``figures`` (``[{caption, path}]``, paths relative to the report) and the ``claims``
    (``[{claim, holds: bool | None, evidence}]``)."""
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
        figures=_figures(figures),
        claims=_claims(claims),
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
) -> list[Path]:
    """Write ``<folder>/tables/<name>.md`` per table (unless ``table_files`` is False: the workflow
    renders each table in its own rule) and ``<folder>/report.md``, atomically; all markdown is
    rendered first, so bad input writes nothing. Returns the paths written."""
    report = render_report(tables, title=title, intro=intro, figures=figures, claims=claims)
    folder = Path(folder)
    written = [
        atomic_write_text(folder / "tables" / f"{table.name}.md", render_table(table))
        for table in (tables if table_files else ())
    ]
    written.append(atomic_write_text(folder / "report.md", report))
    return written
