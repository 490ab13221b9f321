"""The report's tables through the workflow: a bad table or claim stops the parse, and each table's rule
reads the result file of every column it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .test_workflow import ROOT, SCHEMA, snakemake


def _toy_config_with(edit) -> dict:
    config = yaml.safe_load((ROOT / "config/toy.yaml").read_text())
    edit(config)
    return config


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["report"]["tables"]["table1"]["rows"][0].update(modle="teacher"), "'modle' was unexpected"),
        (lambda c: c["report"]["tables"]["table2"].pop("columns"), "'columns' is a required property"),
        (lambda c: c["report"]["tables"]["table3"]["rows"][0]["values"].update(nfe=True), "True is not of type"),
        (lambda c: c["report"]["claims"][1].pop("winner"), "'winner' is a required property"),
        (lambda c: c["report"]["claims"][0].update(kind="largest"), "'largest' is not one of"),
        (lambda c: c["report"]["claims"][3].update(models=["lorad-s2-f4-linear-zero"]), "is too short"),
        (lambda c: c["evaluation"].update(timing={"models": {"toy": ["teacher"]}}), "'prompt' is a required property"),
    ],
)
def test_report_tables_and_claims_are_checked_when_the_workflow_is_parsed(edit, message, tmp_path):
    """A report table or claim the report rule could not use stops `snakemake -n`, not the last job."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    with pytest.raises(WorkflowError) as error:
        validate(_toy_config_with(edit), schema=SCHEMA)
    assert message in "\n".join(map(str, error.value.args))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_toy_config_with(edit)))
    run = snakemake("-n", "--configfile", str(bad), "--config", f"results={tmp_path}")
    assert run.returncode != 0 and message in run.stdout + run.stderr


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/toy.yaml"])
def test_each_table_rule_reads_the_file_of_every_column(configfile, tmp_path):
    """`snakemake <table>` re-renders when any of its numbers changes: for every row with a model,
    each column it does not give in `values` is read from a file that is an input of the table's rule
    (Table 4's training memory: train.json)."""
    config = yaml.safe_load((ROOT / configfile).read_text())
    holders = {
        "memory_mb": "train.json",
        "gpu_days": "train.json",
        "inference_s": "timing.json",
        "fid": "fid.json",
        "precision": "pr.json",
        "recall": "pr.json",
        "clip": "text_image.json",
        "digit_prob": "text_image.json",
        "digit_accuracy": "text_image.json",
        "average": "hps.json",
        "dir_mean_pct": "weights.json",
        "norm_mean_pct": "weights.json",
    }
    checked, tables = set(), config["report"]["tables"]
    run = snakemake(*tables, "-n", "--configfile", configfile, "--config", f"results={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    for name, spec in tables.items():
        inputs = re.search(rf"^rule {name}:\n\s+input: (.*)$", run.stdout, flags=re.M).group(1).split(", ")
        for row in spec["rows"]:
            for column in set(spec["columns"]) & holders.keys() - set(row.get("values", {})):
                run_level = holders[column] in ("train.json", "weights.json")  # distillation runs only
                if row.get("model") and not (run_level and not re.match(r"(lorad|lora|dora|ft)-", row["model"])):
                    folder = Path(tmp_path, row["backbone"], row["model"])
                    where = folder if run_level or holders[column] == "timing.json" else folder / row["evalset"]
                    assert str(where / holders[column]) in inputs, (name, row["label"], column)
                    checked.add(column)
    assert "fid" in checked and (configfile != "config/config.yaml" or {"clip", "memory_mb"} <= checked)


def test_a_table_column_no_file_holds_fails_at_parse_time(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["report"]["tables"]["table4"]["columns"].append("fid_at_5k")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    run = snakemake("table4", "-n", "--configfile", str(bad))
    assert run.returncode != 0 and "column 'fid_at_5k'" in run.stdout + run.stderr
