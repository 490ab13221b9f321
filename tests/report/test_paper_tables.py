"""Paper tables from the real config and CSV: Table 2's paper column, Table 4's memory, hardware caveats."""

from __future__ import annotations

import csv

from dkd.report import TableSpec, build_table, read_paper, read_results, table_specs
from tests.report.test_report import LORAD, PAPER_CSV, REPO, _footnote, _json


def test_real_paper_csv_table2_paper_column(tmp_path):
    paper = read_paper(PAPER_CSV)
    with PAPER_CSV.open(newline="") as handle:
        expected = {
            (r["method"], r["metric"]): r["value"]
            for r in csv.DictReader(handle)
            if r["table"] == "2 (COCO2017, SD1.5)"
        }
    assert len(paper) == sum(1 for _ in PAPER_CSV.open()) - 1
    columns = ["trainable_M", "fid", "clip", "norm_mean_pct", "dir_mean_pct"]
    labels = ["LoRA", "DoRA", "FT (DMD2)", "LoRaD"]
    spec = TableSpec.from_dict(
        "table2",
        {
            "title": "Table 2",
            "paper": "2 (COCO2017, SD1.5)",
            "columns": columns,
            "rows": [
                {"label": label, "backbone": "sd15", "model": label.lower(), "evalset": "coco2017"} for label in labels
            ],
        },
    )
    table = build_table(spec, read_results([]), paper)
    headers = {
        "trainable_M": "Trainable params (M)",
        "fid": "FID",
        "clip": "CLIP",
        "norm_mean_pct": "Norm mean (%)",
        "dir_mean_pct": "Direction mean (%)",
    }
    for i, label in enumerate(labels):
        for metric in columns:
            cell = table.frame.iloc[i][f"{headers[metric]} paper"]
            if expected[(label, metric)]:
                assert cell == expected[(label, metric)]
            else:
                assert _footnote(table, cell) == ['the paper prints no value here ("-" or blank)']
    assert table.frame.iloc[3]["FID paper"] == "20.86" and table.frame.iloc[0]["Trainable params (M) paper"] == "120.9"


def test_hardware_bound_differences_carry_their_caveat(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    _json(folder / "timing.json", "sd15", LORAD, None, {"inference_s": 0.0612})
    _json(folder / "train.json", "sd15", LORAD, None, {"gpu_days": 1.25})
    paper_csv = tmp_path / "paper.csv"
    paper_csv.write_text(
        "table,backbone,method,metric,value\n5,sd15,LoRaD,inference_s,0.11\n"
        "5,sd15,LoRaD,gpu_days,2.1\n5,sd15,LoRaD,fid,10.79\n"
    )
    _json(folder / "fid.json", "sd15", LORAD, "coco2014", {"fid": 11.0})
    spec = TableSpec.from_dict(
        "table5",
        {
            "title": "Table 5",
            "paper": "5",
            "columns": ["fid", "inference_s", "gpu_days"],
            "rows": [{"label": "LoRaD", "backbone": "sd15", "model": LORAD, "evalset": "coco2014"}],
        },
    )
    table = build_table(spec, read_results([folder]), read_paper(paper_csv))
    row = table.frame.iloc[0]
    # 0.0612 - 0.11 = -0.0488 -> "-0.049"; 1.25 - 2.1 = -0.8500000000000001 in floats -> "-0.9"; FID: no caveat
    assert row["Inference (s) Δ"].startswith("-0.049 [") and row["Training (GPU-days) Δ"].startswith("-0.9 [")
    assert row["FID Δ"] == "+0.21"
    assert "NVIDIA A40" in _footnote(table, row["Inference (s) Δ"])[0]
    assert "A100-days" in _footnote(table, row["Training (GPU-days) Δ"])[0]


def test_table4_from_the_configured_spec_reads_train_json_memory(tmp_path):
    """config/config.yaml's Table 4 against the paper's CSV: the memory of our train.json (MiB, model-level)
    beside the paper's 2021 MB for LoRaD, Δ footnoted with what each column counts."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    spec = next(s for s in table_specs({"table4": config["report"]["tables"]["table4"]}))
    folder = tmp_path / "results"
    folder.mkdir()
    _json(folder / "train.json", "sd15", LORAD, None, {"memory_mb": 25000.4, "gpu_days": 2.0})
    _json(folder / "params.json", "sd15", LORAD, None, {"trainable_M": 83.796})
    table = build_table(spec, read_results([folder]), read_paper(PAPER_CSV))
    lorad = table.frame[table.frame["Method"] == "LoRaD"].iloc[0]
    assert (lorad["Memory (MB) ours"], lorad["Memory (MB) paper"]) == ("25000", "2021")
    delta = lorad["Memory (MB) Δ"]
    assert delta.startswith("+22979 [") and "peak GPU memory" in _footnote(table, delta)[0]
    assert lorad["Trainable params (M) paper"] == "83.8" and lorad["Inference (s) paper"] == "0.11"
    assert [row["Method"] for _, row in table.frame.iterrows()] == ["LoRA", "LoRaD", "FT (DMD2)"]
