"""The dreambooth target: config/tiny.yaml end to end (a drawn subject, the tiny teacher and student, tiny DINO
and CLIP, every arm trained, sampled and scored; summary numbers equal to the files, trainable counts equal to
the closed forms, a rerun with nothing to do), and the paper config's plan."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
import yaml
from PIL import Image
from torch import nn

from dkd.backbones.tiny import tiny_unet
from dkd.report.downstream import read_summary

from .test_workflow import ROOT, snakemake, tiny_target

TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj")  # diffusers' DreamBooth-LoRA list


def _settings(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())["downstream"]["dreambooth"]


def _arms(settings: dict) -> list[str]:
    return settings["methods"] + [f"dkd-{settings['student_method']}"]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tiny_target("dreambooth", tmp_path_factory.mktemp("dreambooth-tiny"))
    return out, out / "downstream" / "dreambooth", _settings("tiny.yaml")


def test_every_arm_is_trained_sampled_and_scored(tiny):
    out, root, settings = tiny
    (subject, klass), = settings["subjects"].items()  # fmt: skip
    photos = _json(root / "subjects" / subject / "photos.json")
    assert photos == {"subject": subject, "class": klass, "kind": "object",
                      "photos": [f"{i:02d}.png" for i in range(settings["dataset"]["photos"])]}  # fmt: skip
    classes = _json(root / "classes" / klass / "images.json")
    assert classes["prompt"] == f"a photo of {klass}" and len(classes["images"]) == settings["settings"]["class_images"]
    count = settings["prompts"] * settings["images_per_prompt"]
    seeds = None
    for arm in _arms(settings):
        images = _json(root / subject / arm / "images.json")
        sampler = images["sampler"]
        if arm.startswith("dkd-"):  # the student's generator input, from its exported dkd_student.json
            assert sampler == {"one_step": True, "t_init": 999, "scaled_input": False}
        else:
            assert sampler == {"one_step": False, **settings["sampling"], "scheduler": "DDIMScheduler"}
        records = images["images"]
        assert len(records) == count and [r["seed"] for r in records] == list(range(count))
        assert all(f"sks {klass}" in r["prompt"] and "sks" not in r["text"] for r in records)
        seeds = seeds or [(r["prompt"], r["seed"]) for r in records]
        assert [(r["prompt"], r["seed"]) for r in records] == seeds  # the same prompts and seeds in every arm
        for r in records:
            assert Image.open(root / subject / arm / "images" / r["file"]).size == (16, 16)
        train = root / subject / arm / "train"
        # checkpoint_every 2 of 3 steps: step 2 written, then step 3; keep_checkpoints 1 leaves the last
        assert [p.name for p in (train / "checkpoints").iterdir()] == ["step-00000003"]
        assert [line.split(",")[0] for line in (train / "log.csv").read_text().splitlines()[1:]] == ["1", "2", "3"]
        arm_record = _json(root / subject / arm / "model" / "dreambooth.json")
        assert arm_record["steps"] == arm_record["cost"]["steps"] == settings["settings"]["steps"]
        weights = "unet.safetensors" if arm == "ft" else "adapter_model.safetensors"
        assert (root / subject / arm / "model" / weights).is_file()
        values = _json(root / subject / arm / "metrics.json")["values"]
        assert values["images"] == count and values["photos"] == settings["dataset"]["photos"]
        assert all(-1 <= values[m] <= 1 for m in ("dino", "clip_i", "clip_t"))


def _closed_form(method: str, rank: int) -> int:
    """LoRaD: r (in/2 + out) per adapted Linear; LoRA: r (in + out); ft: every U-Net weight."""
    unet = tiny_unet()
    if method == "ft":
        return sum(p.numel() for p in unet.parameters())
    total = 0
    for name, module in unet.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in TARGETS):
            total += rank * (module.in_features // 2 + module.out_features if method == "lorad" else
                             module.in_features + module.out_features)  # fmt: skip
    return total


def test_summary_numbers_are_the_files_and_the_closed_forms(tiny):
    _, root, settings = tiny
    summary = read_summary(root / "summary.json")
    assert summary.target == "dreambooth" and summary.paper == "Fig. 7 and Fig. 24"
    table = summary.tables[0]
    assert table.columns == ("Arm", "Base", "Method", "Sampler", "Trainable params", "DINO", "CLIP-I", "CLIP-T")
    subjects, arms = list(settings["subjects"]), _arms(settings)
    assert [row[0] for row in table.rows] == arms
    rank = settings["settings"]["rank"]
    for row in table.rows:
        arm, method = row[0], row[2]
        metrics = [_json(root / s / arm / "metrics.json")["values"] for s in subjects]
        expected = [statistics.fmean(m[key] for m in metrics) for key in ("dino", "clip_i", "clip_t")]
        assert list(row[5:]) == expected
        assert row[4] == _json(root / subjects[0] / arm / "model" / "dreambooth.json")["trainable_parameters"]
        assert row[4] == _closed_form(method, rank)
    assert _closed_form("lorad", rank) < _closed_form("lora", rank) < _closed_form("ft", rank)
    settings_table = summary.tables[1]
    assert [row[3] for row in settings_table.rows] == [settings["settings"]["steps"]] * len(arms)
    assert [row[2] for row in settings_table.rows] == [1e-4, 1e-4, 5e-6, 1e-4]  # the paper's lr per method
    (figure,) = summary.figures
    grid = Image.open(root / figure.file)
    assert grid.size == ((1 + settings["grid_prompts"]) * 128, len(arms) * 128)


def test_rerun_has_nothing_to_do(tiny):
    out, _, _ = tiny
    run = snakemake("-n", "dreambooth", "--configfile", "config/tiny.yaml", "--config", f"results={out}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Nothing to be done" in run.stdout + run.stderr


def _job_counts(text: str) -> dict[str, int]:
    block = text[text.index("Job stats:") :].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def test_paper_config_plans_the_target(tmp_path):
    run = snakemake("-n", "dreambooth", "--config", f"results={tmp_path}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    settings = _settings("config.yaml")
    subjects, arms = settings["subjects"], _arms(settings)
    assert arms == ["lorad", "lora", "ft", "dkd-lorad"]
    counts = _job_counts(run.stdout)
    cells = len(subjects) * len(arms)
    assert {k: counts.get(k) for k in ("dreambooth_photos", "dreambooth_class_images", "dreambooth_train",
                                       "dreambooth_sample", "dreambooth_metrics", "dreambooth")} == {
        "dreambooth_photos": len(subjects), "dreambooth_class_images": len(set(subjects.values())),
        "dreambooth_train": cells, "dreambooth_sample": cells, "dreambooth_metrics": len(subjects), "dreambooth": 1,
    }  # fmt: skip
    assert "dreambooth_tiny_metric_models" not in counts
    for group in ("dreambooth-photos", "dreambooth-metrics", "teacher-sd15"):
        assert f"data/models/{group}.json" in run.stdout  # fetched by rule fetch_model, then loaded offline
    assert counts["distill"] == 1  # the DKD student whose exported pipeline the dkd-lorad arm fine-tunes


def test_the_schema_fills_in_the_defaults():
    """A dreambooth section with only the required keys gets config/README.md's defaults."""
    from snakemake.utils import validate

    config = {
        "results": "r",
        "paper": {"parameter_counts": "p.csv"},
        "evaluation": {"sets": {"s": {"prompts": "p", "count": 4}}},
        "downstream": {"dreambooth": {"backbone": "sd15", "student": "lorad-s256-f32-linear-zero",
                                      "subjects": {"dog": "dog"}}},
    }  # fmt: skip
    validate(config, schema=str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    section = config["downstream"]["dreambooth"]
    assert section["dataset"] == {"source": "google/dreambooth", "revision": None, "photos": 4, "size": 24}
    assert (section["methods"], section["student_method"]) == (["lorad", "lora", "ft"], "lorad")
    assert section["settings"] == section["method_settings"] == {}
    assert section["training"] == {"checkpoint_every": 250, "keep_checkpoints": 1, "log_every": 10,
                                   "mixed_precision": "no"}  # fmt: skip
    assert section["sampling"] == {"steps": 50, "guidance_scale": 7.5, "scheduler": "DDIMScheduler"}
    assert (section["prompts"], section["images_per_prompt"], section["seed"]) == (25, 4, 0)
    assert (section["batch_size"], section["grid_prompts"]) == (4, 5)
    models = section["metric_models"]
    assert models["dino"] == {"source": "facebook/dino-vits16", "revision": None}
    assert models["clip"] == {"source": "openai/clip-vit-base-patch32", "revision": None}
