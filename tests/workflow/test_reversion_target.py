"""The reversion target (workflow/rules/reversion.smk): the tiny config end to end (exemplars drawn by a rule,
the token inverted against the tiny teacher, images of the teacher and of the one-step student, timing,
grids, summary.json), the paper config's plan without the ReVersion benchmark on disk, and the clear failure
of the inversion job when the benchmark folder is missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from transformers import AutoTokenizer, CLIPTextModel

from dkd.downstream.reversion.inversion import load_relation_embedding
from dkd.report.downstream import read_summary

from .test_workflow import ROOT, _job_counts, snakemake, tiny_target

TINY = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())["downstream"]["reversion"]
PAPER = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["downstream"]["reversion"]
MODELS = ("student", "teacher")


def _text_encoder(folder: Path):
    return AutoTokenizer.from_pretrained(folder / "tokenizer"), CLIPTextModel.from_pretrained(folder / "text_encoder")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_target("reversion", tmp_path_factory.mktemp("reversion"))


def test_tiny_run_writes_the_token_the_images_and_the_timing(tiny_run):
    (relation,) = TINY["relations"]
    target = tiny_run / "downstream" / "reversion"
    inversion = json.loads((target / relation / "inversion.json").read_text())
    assert (inversion["images"], inversion["captions"], inversion["resolution"]) == (4, 8, 16)  # 2 captions each
    assert inversion["config"]["steps"] == TINY["inversion"]["steps"] and inversion["config"]["init_word"] == "and"

    # The student's text encoder with the learned token differs from the teacher's only in the token's row.
    base_tokenizer, base = _text_encoder(tiny_run / "backbones" / "tiny-sd")
    pipeline = tiny_run / "tiny-sd" / TINY["student"] / "pipeline"
    tokenizer, encoder = _text_encoder(pipeline)
    token_id = load_relation_embedding(target / relation / "relation.safetensors", tokenizer, encoder)
    rows, base_rows = encoder.get_input_embeddings().weight.detach(), base.get_input_embeddings().weight.detach()
    assert token_id == len(base_rows) and rows.shape == (len(base_rows) + 1, base_rows.shape[1])
    assert torch.equal(rows[:token_id], base_rows)
    (and_id,) = base_tokenizer.encode("and", add_special_tokens=False)
    assert not torch.equal(rows[token_id], base_rows[and_id])  # the inversion moved it from "and"
    cosine = torch.nn.functional.cosine_similarity(rows[token_id], base_rows[and_id], dim=0).item()
    assert cosine == pytest.approx(inversion["init_word_cosine"], abs=1e-6) and cosine < 1
    (embedding,) = [n for n, p in encoder.named_parameters() if p is encoder.get_input_embeddings().weight]
    base_state = base.state_dict()
    assert all(torch.equal(v, base_state[k]) for k, v in encoder.state_dict().items() if k != embedding)

    # Both models: the 2 templates x 2 samples with the token, seeds 0..3, 16-pixel PNGs.
    expected = [t.replace("{R}", "<R>") for t in TINY["templates"] for _ in range(TINY["samples"])]
    words = TINY["relations"][relation]["words"]
    for model in MODELS:
        images = json.loads((target / relation / model / "images.json").read_text())
        assert images["prompts"] == expected and images["seeds"] == [0, 1, 2, 3] and images["count"] == 4
        assert images["texts"] == [p.replace("<R>", words) for p in expected] and images["token_id"] == token_id
        assert images["nfe"] == (TINY["teacher"]["steps"] if model == "teacher" else 1)
        files = sorted(p.name for p in Path(images["images"]).iterdir() if not p.name.startswith("."))
        assert files == [f"{k:05d}.png" for k in range(4)]
        assert all(Image.open(Path(images["images"], f)).size == (16, 16) for f in files)
    teacher_image = Image.open(target / relation / "teacher" / "images" / "00000.png")
    assert teacher_image.tobytes() != Image.open(target / relation / "student" / "images" / "00000.png").tobytes()

    # The summary's tables are the numbers of those files; the grid is 2 rows x 4 columns of 256 pixels.
    summary = read_summary(target / "summary.json")
    timings = {m: json.loads((target / "timing" / f"{m}.json").read_text()) for m in MODELS}
    assert all(t["repeats"] == 2 and len(t["times_s"]) == 2 and t["image_size"] == [16, 16] for t in timings.values())
    timing, relations = summary.tables
    (teacher_row, student_row) = timing.rows
    assert teacher_row[2:4] == (TINY["teacher"]["steps"], timings["teacher"]["seconds"])
    assert student_row[2:4] == (1, timings["student"]["seconds"])
    assert student_row[4] == pytest.approx(100 * (1 - timings["student"]["seconds"] / timings["teacher"]["seconds"]))
    assert student_row[5] == 88.89
    assert relations.rows == (
        (relation, 4, 8, TINY["inversion"]["steps"], inversion["seconds"], inversion["init_word_cosine"], 4, 4),
    )
    (figure,) = summary.figures
    assert figure.file == f"{relation}/grid.png" and figure.paper == "Fig. 6 and Fig. 23"
    assert Image.open(target / figure.file).size == (4 * 256, 2 * 256)

    again = snakemake("reversion", "-n", "--configfile", "config/tiny.yaml", "--config", f"results={tiny_run}")
    assert "Nothing to be done" in again.stdout + again.stderr


def _overlay(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({"downstream": {"reversion": settings}}))
    return path


def test_paper_dry_run_plans_every_relation_without_the_benchmark(tmp_path):
    """config/config.yaml with the benchmark and its templates in a folder that does not exist: the ten
    relations are still planned (the folder is an input only where it exists)."""
    missing = tmp_path / "no-benchmark"
    overlay = _overlay(tmp_path, {"benchmark": str(missing), "templates": str(missing / "benchmark_scenarios.py")})
    run = snakemake("reversion", "-n", "--configfile", "config/config.yaml", str(overlay), "--config",
                    f"results={tmp_path / 'results'}")  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    relations = len(PAPER["relations"])
    assert relations == 10
    counts = _job_counts(run.stdout)
    assert {rule: counts.get(rule) for rule in ("reversion_invert", "reversion_generate", "reversion_timing",
                                                 "reversion", "reversion_tiny_exemplars", "distill")} == {
        "reversion_invert": relations, "reversion_generate": 2 * relations, "reversion_timing": 2, "reversion": 1,
        "reversion_tiny_exemplars": None, "distill": 1,
    }  # fmt: skip
    assert "results/downstream/reversion/painted_on/inversion.json" in run.stdout
    assert not missing.exists()


def test_a_missing_benchmark_fails_the_inversion_job_with_a_clear_message(tmp_path):
    """The tiny config pointed at a benchmark folder that does not exist: the run plans, then the inversion
    job stops before loading the teacher, its log naming the folder and where the benchmark comes from."""
    missing = tmp_path / "no-benchmark"
    overlay = _overlay(tmp_path, {"benchmark": str(missing)})
    results = tmp_path / "results"
    target = str(results / "downstream" / "reversion" / "on" / "relation.safetensors")
    args = ["--configfile", "config/tiny.yaml", str(overlay), "--config", f"results={results}"]
    planned = snakemake(target, "-n", *args)
    assert planned.returncode == 0 and _job_counts(planned.stdout).get("reversion_invert") == 1, planned.stderr
    run = snakemake(target, "--cores", "1", *args)
    assert run.returncode != 0
    log = (results / "logs" / "downstream" / "reversion" / "on" / "invert.log").read_text()
    assert "BenchmarkMissingError" in log and f"relation exemplars {missing / 'on'}: no such folder" in log
    assert "github.com/ziqihuangg/ReVersion" in log and "non-commercial" in log
    assert "Loading weights" not in log and not Path(target).exists()  # before the teacher is loaded
    assert re.search(r"Error in rule reversion_invert", run.stdout + run.stderr)
