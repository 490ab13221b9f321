"""The scalecrafter target (workflow/rules/scalecrafter.smk): the tiny config end to end (the tiny student
at 2x and 4x its resolution, plain, re-dilated and with FreeU, and the re-dilated tiny teacher; grids, table,
summary), and the paper config's plan."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from dkd.downstream.scalecrafter.compare import GRID_CELL
from dkd.report.downstream import read_summary

from .test_workflow import ROOT, snakemake, tiny_target

ARMS = ["student", "student-redilated", "student-redilated-freeu", "teacher-redilated"]


def _job_counts(output: str) -> dict[str, int]:
    """{rule: jobs} of a dry run's "Job stats" table."""
    table = output[output.index("Job stats:") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def _settings(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())["downstream"]["scalecrafter"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_target("scalecrafter", tmp_path_factory.mktemp("results"))


def _images(record, folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / "images" / i["file"]), dtype=np.int16) for i in record["images"]]


def test_tiny_scalecrafter_target_end_to_end(tiny_run):
    settings = _settings("tiny.yaml")
    out = tiny_run / "downstream" / "scalecrafter"
    pairs = [(p, s) for p in settings["prompts"] for s in range(settings["seeds"])]
    records = {}
    for r in settings["resolutions"]:
        resolution = f"{r['height']}x{r['width']}"
        images = {}
        for arm in ARMS:
            folder = out / resolution / arm
            record = json.loads((folder / "images.json").read_text())
            records[resolution, arm] = record
            assert [(i["prompt"], i["seed"]) for i in record["images"]] == pairs  # the same seeds in every arm
            for item in record["images"]:
                with Image.open(folder / "images" / item["file"]) as image:
                    assert image.size == (r["width"], r["height"]) and image.mode == "RGB"
            images[arm] = _images(record, folder)
        for a, b in (("student", "student-redilated"), ("student-redilated", "student-redilated-freeu")):
            for x, y in zip(images[a], images[b]):
                assert np.abs(x - y).mean() > 1.0, (resolution, a, b)  # re-dilation (FreeU) changes every image
        teacher = settings["teacher"]
        guided = teacher["steps"] * 2 + min(r["ndcfg_tau"], teacher["steps"])
        assert records[resolution, "teacher-redilated"]["unet_evaluations_per_image"] == guided
        assert records[resolution, "teacher-redilated"]["steps"] == teacher["steps"]
        assert all(records[resolution, a]["unet_evaluations_per_image"] == 1 for a in ARMS[:3])

    summary = read_summary(out / "summary.json")
    assert summary.target == "scalecrafter" and "Fig. 14" in summary.paper
    (table,) = summary.tables
    teacher_s = {res: records[res, "teacher-redilated"]["seconds_per_image"] for res, _ in records}
    expected = [
        [res, arm, rec["steps"], rec["unet_evaluations_per_image"], rec["seconds_per_image"],
         100 * (1 - rec["seconds_per_image"] / teacher_s[res])]
        for (res, arm), rec in records.items()
    ]  # fmt: skip
    assert [list(row) for row in table.rows] == expected  # every number read back from the arms' files
    with open(out / "table.csv") as handle:
        lines = list(csv.reader(handle))
    assert tuple(lines[0]) == table.columns and [line[:2] for line in lines[1:]] == [e[:2] for e in expected]
    assert [float(line[4]) for line in lines[1:]] == [e[4] for e in expected]
    assert len(summary.figures) == len(settings["resolutions"])
    for figure in summary.figures:
        with Image.open(out / figure.file) as grid:
            assert grid.height == GRID_CELL * len(ARMS)
        assert all(arm in figure.caption for arm in ARMS)

    again = snakemake(
        "-n", "scalecrafter", "--configfile", "config/tiny.yaml", "--config", f"results={tiny_run}"
    )  # fmt: skip
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout


def test_paper_config_plans_every_resolution_and_arm(tmp_path):
    settings = _settings("config.yaml")
    assert [(r["height"], r["width"]) for r in settings["resolutions"]] == [(1024, 1024), (2048, 2048)]
    run = snakemake("-n", "scalecrafter", "--config", f"results={tmp_path}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = _job_counts(run.stdout)
    assert counts["scalecrafter_images"] == 2 * len(ARMS) and counts["scalecrafter"] == 1
    assert counts["distill"] == 1  # the sd15 LoRaD student, exported
    planned = set(re.findall(r"downstream/scalecrafter/(\d+x\d+)/([\w-]+)/images\.json", run.stdout))
    assert planned == {(res, arm) for res in ("1024x1024", "2048x2048") for arm in ARMS}
    assert "teacher-sd15.json" in run.stdout  # the teacher arm waits for the fetched SD1.5 files


def test_the_schema_fills_the_defaults_and_refuses_bad_settings():
    import copy

    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    minimal = {"backbone": "sd15", "student": "x", "resolutions": [{"height": 1024, "width": 1024}], "prompts": ["a"]}
    config = {"results": "r", "paper": {"parameter_counts": "p.csv"}, "evaluation": {"sets": {}}}
    config["downstream"] = {"scalecrafter": copy.deepcopy(minimal)}
    validate(config, schema=schema)
    assert config["downstream"]["scalecrafter"] == {
        **minimal,
        "resolutions": [{"height": 1024, "width": 1024, "dilate_tau": 0, "ndcfg_tau": 0, "progressive": False}],
        "seeds": 2,
        "freeu": None,
        "teacher": None,
        "timing": {"warmup": 1, "repeats": 3},
        "batch_size": 1,
    }
    for bad in ({"seeds": 0}, {"seeds": [1, 1]}, {"freeu": {"b1": 1.2}}, {"teacher": {"steps": 4}}, {"prompts": []}):
        broken = copy.deepcopy(config)
        broken["downstream"]["scalecrafter"].update(bad)
        with pytest.raises(WorkflowError):
            validate(broken, schema=schema)
