"""The controlnet target (workflow/rules/controlnet.smk): the tiny config end to end (tiny teacher's
ControlNet, drawn source, canny condition, teacher and one-step student images, per-part timing, canny
F1, grid, summary), and the paper config's plan."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from dkd.report.downstream import read_summary

from .test_workflow import ROOT, _job_counts, snakemake, tiny_target


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_target("controlnet", tmp_path_factory.mktemp("results"))


def test_tiny_controlnet_target_end_to_end(tiny_run):
    config = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())["downstream"]["controlnet"]
    prompts, seeds = config["controls"]["canny"]["prompts"], list(range(config["seeds"]))
    folder = tiny_run / "downstream" / "controlnet"
    side = config["resolution"]

    # the condition: OpenCV's canny edges of the drawn source, in three channels
    condition = np.asarray(Image.open(folder / "canny" / "condition.png"))
    source_edges = cv2.Canny(np.asarray(Image.open(folder / "tiny" / "source.png").convert("RGB")), 100, 200)
    assert condition.shape == (side, side, 3) and source_edges.any()
    assert all((condition[:, :, c] == source_edges).all() for c in range(3))

    # every prompt with every seed, for both models, the same pairs; the student's images are not the teacher's
    images = {}
    for model in ("teacher", "student"):
        marker = json.loads((folder / "canny" / model / "images.json").read_text())
        assert [(r["prompt"], r["seed"]) for r in marker["images"]] == [(p, s) for p in prompts for s in seeds]
        files = sorted(p.name for p in (folder / "canny" / model / "images").glob("*.png"))
        assert files == sorted(r["file"] for r in marker["images"]) and len(files) == len(prompts) * len(seeds)
        images[model] = [np.asarray(Image.open(folder / "canny" / model / "images" / f)) for f in files]
        assert all(image.shape == (side, side, 3) for image in images[model])
        assert marker["call"]["num_inference_steps"] == (config["teacher"]["steps"] if model == "teacher" else 1)
    assert all((a != b).any() for a, b in zip(images["teacher"], images["student"]))

    # the summary's numbers are the files'
    summary = read_summary(folder / "summary.json")
    assert summary.target == "controlnet" and "Fig. 5" in summary.paper
    table = summary.tables[0]
    assert len(table.rows) == 2
    rows = {row[1].split(",")[0]: dict(zip(table.columns, row)) for row in table.rows}
    parts = {m: json.loads((folder / "canny" / m / "parts.json").read_text()) for m in ("teacher", "student")}
    for name, model in (("teacher", "teacher"), ("DKD student", "student")):
        row, timing = rows[name], parts[model]["parts"]
        assert row["text encoder s"] == timing["text_encoder"]["median_s"]
        assert row["U-Net + ControlNet s"] == timing["denoise"]["median_s"]
        assert row["VAE s"] == timing["vae_decode"]["median_s"]
        assert row["total s"] == timing["total"]["median_s"] > 0
        assert len(timing["total"]["times_s"]) == config["timing"]["repeats"]
        assert row["NFE"] == (config["teacher"]["steps"] if model == "teacher" else 1)
        # canny F1, recounted here per pixel from the saved images: 2 |C & O| / (|C| + |O|)
        edges = source_edges > 0
        recounted = []
        for image in images[model]:
            out = cv2.Canny(image, 100, 200) > 0
            recounted.append(2 * (edges & out).sum() / (edges.sum() + out.sum()))
        f1 = json.loads((folder / "canny" / model / "canny_f1.json").read_text())
        assert f1["per_image"] == pytest.approx(recounted) and row["canny F1"] == f1["mean"]
    teacher_total, student_total = (parts[m]["parts"]["total"]["median_s"] for m in ("teacher", "student"))
    assert rows["DKD student"]["saving %"] == pytest.approx(100 * (1 - student_total / teacher_total))
    assert rows["DKD student"]["paper saving %"] == 86.26 and rows["teacher"]["saving %"] == "—"

    # the grid: condition | teacher | student, a row per prompt and seed
    assert [f.file for f in summary.figures] == ["grid-canny.png"]
    grid = Image.open(folder / "grid-canny.png")
    assert grid.size == (3 * 256, len(prompts) * len(seeds) * 256)

    again = snakemake("controlnet", "-n", "--configfile", "config/tiny.yaml", "--config", f"results={tiny_run}")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_paper_config_plans_three_controls_with_their_hub_files(tmp_path):
    run = snakemake("controlnet", "-n", "--config", f"results={tmp_path}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = _job_counts(run.stdout)
    rules = ("controlnet_condition", "controlnet_images", "controlnet_f1", "controlnet", "tiny_controlnet")
    expected = {"controlnet_condition": 3, "controlnet_images": 6, "controlnet_f1": 2, "controlnet": 1}
    assert {rule: counts.get(rule) for rule in rules} == {**expected, "tiny_controlnet": None}
    # each job that loads hub files waits for the fetch_model marker of its control (and the teacher's)
    jobs = re.findall(r"^rule (controlnet_\w+):\n    input: (.*)\n    output: (.*)$", run.stdout, flags=re.M)
    student = f"{tmp_path}/sd15/lorad-s256-f32-linear-zero/pipeline/model_index.json"
    for rule, inputs, outputs in jobs:
        kind = re.search(r"/downstream/controlnet/(\w+)/", outputs).group(1)
        needed = {f"data/models/controlnet-{kind}.json"} if rule != "controlnet_f1" else set()
        if rule == "controlnet_images":
            needed |= {"data/models/teacher-sd15.json" if "/teacher/" in outputs else student}
        assert needed <= set(inputs.split(", ")), (rule, inputs)
    assert len(jobs) == 3 + 6 + 2
