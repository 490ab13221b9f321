"""Snakemake's HTML report of the shortened toy run (`snakemake --report report.html`, the run's
config): the tables, report.md, Fig. 16, the weight-analysis plots and the sample grids, each embedded
with its caption (workflow/report/*.rst, Jinja rendered) under its category and labels. It runs
before the toy tests that delete results (tests/conftest.py orders it)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, toy_test_config


def _script_data(html: str, name: str):
    """The JSON of `<script id="name"> var x = ...; </script>` in Snakemake's report page."""
    match = re.search(rf'<script id="{name}">\s*var \w+ = (.*?);\s*</script>', html, flags=re.S)
    assert match, f"no script {name} in the report"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def html_report(toy_run, tmp_path_factory):
    """(results, categories, results' entries by path, workflow description, config) of the report."""
    results, config = toy_run
    args, _ = toy_test_config(results)
    path = tmp_path_factory.mktemp("html-report") / "report.html"
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--report", str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "downloading" not in run.stderr  # self-contained from the installed assets, offline
    html = path.read_text(encoding="utf-8")
    entries = _script_data(html, "results")
    for entry in entries.values():
        entry["caption"] = " ".join(entry["caption"].split())  # reStructuredText's line breaks as spaces
    description = " ".join(_script_data(html, "workflow-desc").split())
    return results, _script_data(html, "categories"), entries, description, config


def _embedded(entry: dict, path: Path, mime: str) -> None:
    """The entry holds the file itself, base64 in its data URI."""
    assert entry["mime_type"] == mime
    head, data = entry["data_uri"].split(";base64,", 1)
    assert head.startswith(f"data:{mime};")
    assert base64.b64decode(data) == path.read_bytes()


def test_every_table_and_the_report_are_embedded_with_their_captions(html_report):
    results, categories, entries, _, config = html_report
    tables = config["report"]["tables"]
    assert sorted(categories["Tables"]["Other"]) == sorted(str(results / "tables" / f"{t}.md") for t in tables)
    for name, spec in tables.items():
        path = results / "tables" / f"{name}.md"
        entry = entries[str(path)]
        _embedded(entry, path, "text/markdown")
        assert entry["labels"] == {"table": name, "title": spec["title"]}
        assert entry["job_properties"]["rule"] == name
        assert spec["title"] in entry["caption"] and "Rendered by the rule <tt" in entry["caption"]
    (report,) = categories["Report"]["Other"]
    assert report == str(results / "report.md")
    _embedded(entries[report], results / "report.md", "text/markdown")
    claims = len(config["report"]["claims"])
    assert f"every configured table ({len(tables)}" in entries[report]["caption"]
    assert f"({claims} claims" in entries[report]["caption"]


def test_grids_and_figures_are_embedded_images(html_report):
    results, categories, entries, _, config = html_report
    grids = sorted((results / "toy").glob("*/toy-eval/grid.png"))
    models = len(config["distill"]["runs"]["toy"]) + 2 + len(config["distill"]["merges"]["toy"])
    assert len(grids) == models + 2 * len(config["analysis"]["swaps"]["toy"])  # runs, teachers, merge, swaps
    assert sorted(categories["Samples"]) == ["toy on toy-eval"]
    assert sorted(categories["Samples"]["toy on toy-eval"]) == sorted(str(grid) for grid in grids)
    for grid in grids:
        _embedded(entries[str(grid)], grid, "image/png")
        assert entries[str(grid)]["labels"] == {
            "backbone": "toy",
            "model": grid.parent.parent.name,
            "evalset": "toy-eval",
        }
        assert "(toy on toy-eval)" in entries[str(grid)]["caption"]  # config["report"]["grids"], rendered

    figures = categories["Figures"]
    assert figures["Fig. 16: convergence"] == [str(results / "fig16.png")]
    _embedded(entries[str(results / "fig16.png")], results / "fig16.png", "image/png")
    curves = config["distill"]["curves"]
    fig16 = entries[str(results / "fig16.png")]["caption"]
    assert f"on {curves['count']} prompts" in fig16 and ", ".join(curves["runs"]["toy"]) in fig16

    analysed = config["analysis"]["weights"]["toy"]
    for name, figure, subcategory in (
        ("weights.png", "Fig. 2a", "Fig. 2a: weight change per layer"),
        ("energy.png", "Fig. 2b", "Fig. 2b: energy of the direction residual"),
    ):
        plots = [results / "toy" / run / "weights" / name for run in analysed]
        assert sorted(figures[subcategory]) == sorted(str(p) for p in plots)
        for run, plot in zip(analysed, plots):
            entry = entries[str(plot)]
            _embedded(entry, plot, "image/png")
            assert entry["labels"] == {"backbone": "toy", "model": run}
            assert f"{figure} for {run} (backbone toy)" in entry["caption"]  # the wildcards, rendered


def test_captions_are_rendered_and_the_workflow_is_described(html_report):
    results, _, entries, description, config = html_report
    plots = 2 * len(config["analysis"]["weights"]["toy"])  # Fig. 2a and 2b of each analysed run
    grids = len(list((results / "toy").glob("*/toy-eval/grid.png")))
    assert len(entries) == len(config["report"]["tables"]) + 1 + 1 + plots + grids
    for entry in entries.values():
        assert entry["caption"].startswith("<p>") and "{{" not in entry["caption"] and "{%" not in entry["caption"]
        assert "system-message" not in entry["caption"]  # no reStructuredText error
    assert config["report"]["title"] in description and str(results) in description
    assert "system-message" not in description
