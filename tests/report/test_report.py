"""The report: our JSON results beside the paper's CSV, footnoted gaps, sources, atomic markdown files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dkd.report import (
    RowSpec,
    TableSpec,
    build_table,
    read_paper,
    read_results,
    render_report,
    render_table,
    table_specs,
    write_report,
)

REPO = Path(__file__).resolve().parents[2]
PAPER_CSV = REPO / "config" / "paper" / "results.csv"
LORAD, LORA = "lorad-s256-f32-linear-zero", "lora-s256-f32-linear-zero"


def _json(path: Path, backbone, model, evalset, values, **extra) -> Path:
    path.write_text(
        json.dumps(
            {
                "backbone": backbone,
                "model": model,
                "evalset": evalset,
                "values": values,
                "provenance": {"count": 5000},
                **extra,
            }
        )
    )
    return path


@pytest.fixture
def paper(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text(
        "table,backbone,method,metric,value\n"
        '"2 (toy, SD1.5)",sd15,LoRaD,trainable_M,83.8\n'
        '"2 (toy, SD1.5)",sd15,LoRaD,fid,20.86\n'
        '"2 (toy, SD1.5)",sd15,LoRaD,clip,0.31\n'
        '"2 (toy, SD1.5)",sd15,LoRaD,norm_mean_pct,\n'
        '"2 (toy, SD1.5)",sd15,LoRA,trainable_M,120.9\n'
        '"2 (toy, SD1.5)",sd15,LoRA,fid,25.27\n'
        '"2 (toy, SD1.5)",sd15,LoRA,clip,0.29\n'
        '"2 (toy, SD1.5)",sd15,LoRA,norm_mean_pct,0.06\n'
        "other,sd15,LoRaD,fid,1.0\n"
    )
    return read_paper(path)


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    files = {
        "lorad_coco": _json(folder / "lorad_coco.json", "sd15", LORAD, "coco2017", {"fid": 21.123, "clip": 0.3123}),
        "lorad_model": _json(folder / "lorad_model.json", "sd15", LORAD, None, {"trainable_M": 83.8, "fid": 99.0}),
        "lora_coco": _json(folder / "lora_coco.json", "sd15", LORA, "coco2017", {"fid": 24.5}),
        "unused": _json(folder / "unused.json", "sd21", LORAD, "coco2017", {"fid": 1.0}),
    }
    return read_results([folder]), files


def _spec(**changes):
    data = {
        "title": "Table 2 (toy)",
        "paper": "2 (toy, SD1.5)",
        "columns": ["trainable_M", "fid", "clip", "norm_mean_pct"],
        "rows": [
            {"label": "LoRaD", "backbone": "sd15", "model": LORAD, "evalset": "coco2017"},
            {"label": "LoRA", "backbone": "sd15", "model": LORA, "evalset": "coco2017"},
            {
                "label": "SD1.5 (cfg=3.0)",
                "backbone": "sd15",
                "model": "teacher",
                "evalset": "coco2017",
                "note": "25 steps",
                "values": {"trainable_M": 860},
            },
        ],
    }
    data.update(changes)
    return TableSpec.from_dict("table2", data)


def _footnote(table, cell: str) -> list[str]:
    """The footnote texts a cell's markers point to."""
    return [table.footnotes[int(n) - 1] for n in re.findall(r"\[(\d+)\]", cell)]


def test_read_results_columns_and_model_level_null(results):
    frame, files = results
    assert list(frame.columns) == ["backbone", "model", "evalset", "metric", "value", "source"]
    assert len(frame) == 6
    row = frame[(frame.metric == "trainable_M")].iloc[0]
    assert row.evalset is None and row.value == 83.8 and row.source == str(files["lorad_model"])


def test_cells_ours_paper_delta(results, paper):
    frame, files = results
    table = build_table(_spec(), frame, paper)
    lorad = table.frame.iloc[0]
    assert lorad["Method"] == "LoRaD"
    # FID: 21.123 - 20.86 = 0.263 -> "+0.26"; CLIP (3 decimals): 0.3123 - 0.31 = 0.0023 -> "+0.002".
    assert (lorad["FID ours"], lorad["FID paper"], lorad["FID Δ"]) == ("21.12", "20.86", "+0.26")
    assert (lorad["CLIP ours"], lorad["CLIP paper"], lorad["CLIP Δ"]) == ("0.312", "0.31", "+0.002")
    lora = table.frame.iloc[1]
    # 24.5 - 25.27 = -0.77
    assert (lora["FID ours"], lora["FID paper"], lora["FID Δ"]) == ("24.50", "25.27", "-0.77")


def test_model_level_metric_is_looked_up_with_null_evalset(results, paper):
    frame, files = results
    table = build_table(_spec(), frame, paper)
    lorad = table.frame.iloc[0]
    # trainable_M comes from the evalset-null file although the row names coco2017 (83.8 - 83.8 = 0).
    assert (lorad["Trainable params (M) ours"], lorad["Trainable params (M) Δ"]) == ("83.80", "+0.00")
    # ... while FID, a per-evaluation-set metric, is not taken from the model-level file (99.0).
    assert lorad["FID ours"] == "21.12"


def test_missing_reasons_each_have_their_footnote(results, paper):
    frame, files = results
    table = build_table(_spec(), frame, paper)
    lorad, lora, teacher = (table.frame.iloc[i] for i in range(3))
    assert lora["CLIP ours"].startswith("— ")
    assert _footnote(table, lora["CLIP ours"]) == [
        f"the result file(s) {files['lora_coco']} for backbone='sd15', model='{LORA}', evalset='coco2017' "
        "have no 'clip'"
    ]
    assert lora["Trainable params (M) ours"].startswith("— ")
    assert _footnote(table, lora["Trainable params (M) ours"]) == [
        f"no result file for backbone='sd15', model='{LORA}', evalset=null (model-level value)"
    ]
    assert lorad["Norm mean (%) paper"].startswith("— ")
    assert _footnote(table, lorad["Norm mean (%) paper"]) == ['the paper prints no value here ("-" or blank)']
    assert _footnote(table, teacher["FID paper"]) == [
        "the paper's table '2 (toy, SD1.5)' has no row 'SD1.5 (cfg=3.0)' on backbone 'sd15'"
    ]
    assert _footnote(table, teacher["FID ours"]) == [
        "no result file for backbone='sd15', model='teacher', evalset='coco2017'"
    ]
    # Δ of a missing cell points to the reasons of both sides.
    assert set(_footnote(table, teacher["FID Δ"])) == set(
        _footnote(table, teacher["FID ours"]) + _footnote(table, teacher["FID paper"])
    )
    assert _footnote(table, teacher["Method"]) == ["25 steps"]


def test_paper_without_column_and_row_without_model(results, paper):
    frame, _ = results
    spec = _spec(columns=["fid", "precision"], rows=[{"label": "LoRaD", "backbone": "sd15"}])
    table = build_table(spec, frame, paper)
    row = table.frame.iloc[0]
    assert _footnote(table, row["Precision paper"]) == ["the paper's table '2 (toy, SD1.5)' has no 'precision' column"]
    assert _footnote(table, row["FID ours"]) == ["no model of ours is configured for this row"]


def test_identical_reasons_share_one_footnote(results, paper):
    frame, _ = results
    table = build_table(_spec(), frame, paper)
    teacher = table.frame.iloc[2]
    marks = {teacher[f"{h} ours"] for h in ("FID", "CLIP")}
    assert len(marks) == 1  # both point to the one "no result file ... coco2017" footnote
    paper_marks = {teacher[f"{h} paper"] for h in ("Trainable params (M)", "FID", "CLIP", "Norm mean (%)")}
    assert len(paper_marks) == 1
    assert len(table.footnotes) == len(set(table.footnotes))
    # Every footnote is used by at least one cell, and every marker points to a footnote.
    used = {int(n) for cell in table.frame.to_numpy().ravel() for n in re.findall(r"\[(\d+)\]", cell)}
    assert used == set(range(1, len(table.footnotes) + 1))


def test_configured_values_show_as_ours_and_are_marked(results, paper, tmp_path):
    frame, _ = results
    table = build_table(_spec(), frame, paper)
    cell = table.frame.iloc[2]["Trainable params (M) ours"]
    assert cell.startswith("860.00 ")
    assert _footnote(table, cell) == ["a setting configured in the table spec, not a measurement"]
    spec = _spec(
        columns=["trainable_M"],
        rows=[{"label": "LoRA", "backbone": "sd15", "model": LORA, "values": {"trainable_M": 121}}],
    )
    lora = build_table(spec, frame, paper).frame.iloc[0]
    assert lora["Trainable params (M) Δ"] == "+0.10"  # 121 - 120.9
    # A value both configured and measured is ambiguous: one error naming the file.
    _json(tmp_path / "m.json", "sd15", LORA, None, {"trainable_M": 120.0})
    both = read_results([tmp_path / "m.json"])
    with pytest.raises(ValueError, match=r"configured in the spec and also measured in .*m\.json"):
        build_table(spec, both, paper)


def test_sources_list_the_files_used(results, paper):
    frame, files = results
    table = build_table(_spec(), frame, paper)
    assert table.sources == tuple(sorted(str(files[k]) for k in ("lorad_coco", "lorad_model", "lora_coco")))
    text = render_table(table)
    for source in table.sources:
        assert f"- `{source}`" in text
    assert str(files["unused"]) not in text
    assert f"- paper: `{paper.source.iloc[0]}`" in text


def test_table_without_paper_has_only_ours(results):
    frame, _ = results
    spec = TableSpec.from_dict(
        "toy",
        {
            "title": "Toy",
            "columns": ["fid"],
            "rows": [{"label": "LoRaD", "backbone": "sd15", "model": LORAD, "evalset": "coco2017"}],
        },
    )
    table = build_table(spec, frame)
    assert list(table.frame.columns) == ["Method", "FID"]
    assert table.frame.iloc[0]["FID"] == "21.12"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"colour": "red"}, r"table 'table2': missing key\(s\) \[\], unknown key\(s\) \['colour'\]"),
        ({"rows": [{"backbone": "sd15"}]}, r"table 'table2', row 1: missing key\(s\) \['label'\]"),
        ({"rows": [{"label": "x", "backbone": "sd15", "modle": "m"}]}, r"row 1: .*unknown key\(s\) \['modle'\]"),
        ({"rows": [{"label": "x", "backbone": "sd15", "values": {"nfe": 1}}]}, r"configured values \['nfe'\]"),
        ({"columns": ["fid", "fid"]}, "listed twice"),
        ({"rows": [{"label": "x", "backbone": "sd15", "values": {"fid": None}}]}, r"values\['fid'\]"),
    ],
)
def test_bad_spec_is_one_clear_error(change, message):
    with pytest.raises(ValueError, match=message):
        _spec(**change)


def test_unknown_paper_table_and_rowspec_check(results, paper):
    frame, _ = results
    with pytest.raises(ValueError, match=r"paper table 'no such' is not in the paper's results"):
        build_table(_spec(paper="no such"), frame, paper)
    with pytest.raises(ValueError, match="'backbone' must be a non-empty string"):
        RowSpec(label="x", backbone="")
    assert [
        s.name
        for s in table_specs({"a": {"title": "A", "columns": ["fid"], "rows": [{"label": "x", "backbone": "sd15"}]}})
    ] == ["a"]


def test_malformed_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"backbone": "sd15", ')
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ": not valid JSON"):
        read_results([bad])
    wrong = _json(tmp_path / "wrong.json", "sd15", LORAD, "coco2017", {"fid": "NaN"}, extra=1)
    with pytest.raises(ValueError, match=re.escape(str(wrong)) + r".*unknown key\(s\) \['extra'\]"):
        read_results([wrong])
    nan = tmp_path / "nan.json"
    nan.write_text('{"backbone": "sd15", "model": "m", "evalset": null, "values": {"fid": NaN}}')
    with pytest.raises(ValueError, match=re.escape(str(nan)) + r": values\['fid'\] must be a finite number"):
        read_results([nan])


def test_a_value_in_two_files_is_an_error(tmp_path):
    first = _json(tmp_path / "a.json", "sd15", LORAD, "coco2017", {"fid": 1.0})
    second = _json(tmp_path / "b.json", "sd15", LORAD, "coco2017", {"fid": 2.0, "clip": 0.3})
    with pytest.raises(ValueError, match=f"{re.escape(str(second))}: 'fid' .* also in {re.escape(str(first))}"):
        read_results([first, second])


def test_bad_paper_csv_names_file_and_line(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text("table,backbone,method,metric,value\nt,sd15,A,fid,1\nt,sd15,A,fid,2\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ", line 3: .* already given on line 2"):
        read_paper(path)
    path.write_text("table,backbone,method,value\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": columns must be"):
        read_paper(path)


def test_report_and_atomic_write(results, paper, tmp_path):
    frame, _ = results
    table = build_table(_spec(), frame, paper)
    claims = [
        {"claim": "LoRaD | beats LoRA", "holds": True, "evidence": "FID 21.12 < 24.50"},
        {"claim": "CLIP rises", "holds": False, "evidence": "see table"},
        {"claim": "untested", "holds": None, "evidence": ""},
    ]
    figures = [{"caption": "Figure 2", "path": "figures/fig2.png"}]
    out = tmp_path / "out"
    written = write_report(
        out, [table], title="DKD reproduction", intro="Ours vs the paper.", figures=figures, claims=claims
    )
    assert written == [out / "tables" / "table2.md", out / "report.md"]
    report = (out / "report.md").read_text()
    assert report.startswith("# DKD reproduction\n\nOurs vs the paper.\n")
    assert render_table(table) in report and (out / "tables" / "table2.md").read_text() == render_table(table)
    assert "![Figure 2](figures/fig2.png)" in report
    assert "| LoRaD \\| beats LoRA | yes | FID 21.12 < 24.50 |" in report
    assert "| CLIP rises | no | see table |" in report and "| untested | — | — |" in report
    assert "| FID ours | FID paper | FID Δ |" in re.sub(r" +", " ", report)
    assert sorted(p.name for p in out.rglob("*")) == ["report.md", "table2.md", "tables"]  # no temp file left
    alone = tmp_path / "report-only"  # the workflow: each table file is written by the table's own rule
    assert write_report(alone, [table], title="t", intro="", table_files=False) == [alone / "report.md"]
    assert render_table(table) in (alone / "report.md").read_text() and not (alone / "tables").exists()
    # Bad input writes nothing and keeps the earlier report.
    with pytest.raises(ValueError, match=r"claims\[0\]: 'holds' must be true, false or null"):
        write_report(out, [table], title="new", intro="", claims=[{"claim": "c", "holds": "yes", "evidence": ""}])
    assert (out / "report.md").read_text() == report
    with pytest.raises(ValueError, match="appear twice"):
        render_report([table, table], title="t", intro="")
