"""The report's Downstream section: the summary file each downstream target writes, and its markdown."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dkd.report.downstream import Figure, Summary, Table, format_cell, read_summary, render_section, write_summary


def _summary(target="controlnet", **overrides) -> Summary:
    fields = {
        "target": target,
        "title": f"{target} with the one-step student",
        "paper": "Fig. 5",
        "tables": [
            Table(
                title="Time per image",
                columns=("model", "NFE", "seconds", "saving %"),
                rows=(("SD1.5, DDIM 50", 50, 2.5, "—"), ("DKD, one step", 1, 0.25, 90.0)),
                note="A40 in the paper; this machine here.",
                decimals=2,
            )
        ],
        "figures": [Figure(file="grid.png", caption="Canny control: condition, teacher, student", paper="Fig. 5")],
        "notes": ["Tiny models: the pictures say nothing about quality."],
    }
    return Summary(**{**fields, **overrides})


@pytest.fixture
def folder(tmp_path):
    target = tmp_path / "downstream" / "controlnet"
    target.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(target / "grid.png")
    return target


def test_write_read_round_trip_and_json_shape(folder):
    summary = _summary()
    path = write_summary(folder / "summary.json", summary)
    assert read_summary(path) == summary
    data = json.loads(path.read_text())
    assert data["tables"][0]["rows"] == [["SD1.5, DDIM 50", 50, 2.5, "—"], ["DKD, one step", 1, 0.25, 90.0]]
    assert not list(folder.glob("*.tmp*"))  # written atomically


def test_render_section_tables_figures_and_relative_paths(folder, tmp_path):
    write_summary(folder / "summary.json", _summary())
    text = render_section([folder / "summary.json"], tmp_path)
    assert text.startswith("## Downstream\n")
    assert "### controlnet with the one-step student" in text
    assert "Reproduces the paper's Fig. 5." in text
    assert "| model | NFE | seconds | saving % |" in text
    assert "| SD1.5, DDIM 50 | 50 | 2.50 | — |" in text  # integers as they are, floats at the table's decimals
    assert "| DKD, one step | 1 | 0.25 | 90.00 |" in text
    assert "![Canny control: condition, teacher, student](downstream/controlnet/grid.png)" in text
    assert "*Canny control: condition, teacher, student (paper Fig. 5).*" in text
    assert "Tiny models: the pictures say nothing about quality." in text
    assert render_section([], tmp_path) == ""


def test_section_follows_the_target_order_not_the_input_order(tmp_path):
    paths = []
    for target in ("reversion", "controlnet"):
        folder = tmp_path / target
        folder.mkdir()
        paths.append(write_summary(folder / "summary.json", _summary(target, figures=[])))
    text = render_section(paths, tmp_path)
    assert text.index("### controlnet") < text.index("### reversion")


@pytest.mark.parametrize(
    "value, decimals, shown",
    [(3, 2, "3"), (2.0, 1, "2.0"), (0.12345, 3, "0.123"), (float("nan"), 2, "—"), ("86.26 (A40)", 2, "86.26 (A40)")],
)
def test_format_cell(value, decimals, shown):
    assert format_cell(value, decimals) == shown


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _summary(target="unknown"), "one of"),
        (lambda: _summary(title=" "), "non-empty"),
        (lambda: Table(title="t", columns=("a", "b"), rows=((1,),)), "1 cells for 2 columns"),
        (lambda: Table(title="t", columns=("a",), rows=((None,),)), "number or a string"),
        (lambda: Table(title="t", columns=("a",), rows=((True,),)), "number or a string"),
        (lambda: Table(title="t", columns=(), rows=()), "no columns"),
        (lambda: Table(title="t", columns=("a",), rows=(), decimals=9), "decimals"),
        (lambda: Figure(file="../grid.png", caption="c", paper="Fig. 5"), "inside the target's folder"),
        (lambda: Figure(file="grid.png", caption="c", paper=""), "non-empty"),
    ],
)
def test_bad_summaries_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_missing_figure_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="grid.png"):
        write_summary(tmp_path / "summary.json", _summary())
    assert not (tmp_path / "summary.json").exists()


def test_a_malformed_file_names_itself(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"target": "controlnet", "title": "t"}))
    with pytest.raises(ValueError, match=f"{path}: not a downstream summary"):
        read_summary(path)


def test_the_report_ends_with_the_section(folder, tmp_path):
    from dkd.report.render import render_report

    write_summary(folder / "summary.json", _summary())
    section = render_section([folder / "summary.json"], tmp_path)
    report = render_report([], title="DKD", intro="intro", downstream=section)
    assert report.endswith(section)
    assert "## Downstream" not in render_report([], title="DKD", intro="intro")
