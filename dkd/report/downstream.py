"""The report's Downstream section (paper 4.3 and F.2): the one-step student inside ControlNet,
DreamBooth, ScaleCrafter and ReVersion.

Each downstream target (``workflow/rules/<target>.smk``) ends with one file,
``<results>/downstream/<target>/summary.json``, written by :func:`write_summary`: its title, the paper
figures it reproduces, its tables (every number read from a file the target wrote) and its figures (paths
relative to the summary, each captioned with the paper figure it stands for). :func:`render_section` turns
the summaries into the markdown of the report's section; :func:`read_summary` refuses a malformed file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..io import atomic_write_text

TARGETS = ("controlnet", "dreambooth", "scalecrafter", "reversion")  # the section's order
SUMMARY = "summary.json"


def _text(name: str, value, *, empty: bool = False) -> None:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ValueError(f"{name}: expected {'a' if empty else 'a non-empty'} string; got {value!r}.")


def _cell(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value is None:
        raise ValueError(f"{name}: a cell is a number or a string; got {value!r}.")


@dataclass(frozen=True)
class Table:
    """A table of a target: ``columns`` and ``rows`` (numbers or text, one cell per column), a ``note``
    under it, the ``decimals`` of its non-integer numbers."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    note: str = ""
    decimals: int = 3

    def __post_init__(self):
        _text("table title", self.title)
        _text(f"table {self.title!r}: note", self.note, empty=True)
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))
        if not self.columns:
            raise ValueError(f"table {self.title!r}: no columns.")
        for column in self.columns:
            _text(f"table {self.title!r}: column", column)
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: row {i} has {len(row)} cells for {len(self.columns)} columns.")
            for cell in row:
                _cell(f"table {self.title!r}, row {i}", cell)
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 8:
            raise ValueError(f"table {self.title!r}: decimals must be an integer in [0, 8]; got {self.decimals!r}.")


@dataclass(frozen=True)
class Figure:
    """An image of a target: ``file`` relative to its summary, its ``caption`` and the ``paper`` figure it
    reproduces (e.g. "Fig. 5")."""

    file: str
    caption: str
    paper: str

    def __post_init__(self):
        for name in ("file", "caption", "paper"):
            _text(f"figure {name}", getattr(self, name))
        if Path(self.file).is_absolute() or ".." in Path(self.file).parts:
            raise ValueError(f"figure {self.file!r}: a path inside the target's folder, relative to its summary.")


@dataclass(frozen=True)
class Summary:
    """One target's part of the section (see the module docstring)."""

    target: str
    title: str
    paper: str
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"summary target {self.target!r}: one of {TARGETS}.")
        _text("summary title", self.title)
        _text("summary paper", self.paper)
        object.__setattr__(self, "tables", tuple(t if isinstance(t, Table) else Table(**t) for t in self.tables))
        object.__setattr__(self, "figures", tuple(f if isinstance(f, Figure) else Figure(**f) for f in self.figures))
        object.__setattr__(self, "notes", tuple(self.notes))
        for note in self.notes:
            _text("summary note", note)


def write_summary(path: str | os.PathLike, summary: Summary) -> Path:
    """Write ``summary`` (checked at construction) as JSON, atomically; every figure must exist."""
    if not isinstance(summary, Summary):
        raise ValueError(f"write_summary: expected a Summary; got {type(summary).__name__}.")
    missing = [f.file for f in summary.figures if not (Path(path).parent / f.file).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: figure file(s) {missing} do not exist beside the summary.")
    return atomic_write_text(path, json.dumps(asdict(summary), indent=2) + "\n")


def read_summary(path: str | os.PathLike) -> Summary:
    """The :class:`Summary` in ``path``; a malformed file raises ValueError naming it."""
    try:
        data = json.loads(Path(path).read_text())
        return Summary(**data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a downstream summary ({error})") from None


def format_cell(value, decimals: int) -> str:
    """A number at ``decimals`` (integers as they are, NaN as "—"), text as it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return "—" if not math.isfinite(value) else f"{value:.{decimals}f}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def render_table(table: Table) -> str:
    lines = [f"**{table.title}**", "", _row(table.columns), _row(["---"] * len(table.columns))]
    lines += [_row(format_cell(v, table.decimals) for v in row) for row in table.rows]
    return "\n".join(lines + ([f"\n{table.note}"] if table.note else []))


def render_section(summaries: Sequence[str | os.PathLike], report_dir: str | os.PathLike) -> str:
    """The markdown of the report's Downstream section from the ``summaries`` (paths of summary.json, in
    :data:`TARGETS` order); figure paths are made relative to ``report_dir``. No summaries: ""."""
    read = sorted(((Path(p), read_summary(p)) for p in summaries), key=lambda ps: TARGETS.index(ps[1].target))
    if not read:
        return ""
    parts = ["## Downstream", "The distilled one-step student inside existing methods (paper 4.3 and F.2)."]
    for path, summary in read:
        parts.append(f"### {summary.title}\n\nReproduces the paper's {summary.paper}.")
        parts += [render_table(t) for t in summary.tables]
        for figure in summary.figures:
            image = Path(os.path.relpath(path.parent / figure.file, report_dir)).as_posix()
            parts.append(f"![{figure.caption}]({image})\n\n*{figure.caption} (paper {figure.paper}).*")
        parts += list(summary.notes)
    return "\n\n".join(parts) + "\n"
