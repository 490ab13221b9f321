"""The toy benchmark, shortened (.test/config/toy.yaml over config/toy.yaml: five runs, a few
distillation steps, 40 evaluation images): every rule of the paper's workflow runs end to end on CPU
and the report's tables and claims are complete. The run is the session fixture ``toy_run``
(tests/conftest.py), shared with the SLURM tests (tests/cluster/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from dkd.provenance import environment, weights_sha256
from tests.conftest import ROOT, toy_test_config


def test_every_table_is_complete(toy_run):
    results, config = toy_run
    report = (results / "report.md").read_text()
    for name, spec in config["report"]["tables"].items():
        table = (results / "tables" / f"{name}.md").read_text()
        assert spec["title"] in table and spec["title"] in report
        assert table.strip() in report  # rendered by the table's own rule from its files: the report's table
        rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
        assert len(rows) == len(spec["rows"])
        assert "—" not in table, table  # every cell has a number from a result file
        for row in spec["rows"]:
            assert row["label"] in table


def test_claims_are_all_decided_from_the_tables(toy_run):
    results, config = toy_run
    report = (results / "report.md").read_text()
    section = report[report.index("## Claims") :]
    verdicts = re.findall(r"^\| .+? \| (yes|no) \|", section, flags=re.M)
    assert len(verdicts) == len(config["report"]["claims"])


def test_numbers_trace_back_to_result_files(toy_run):
    results, config = toy_run
    fid = json.loads((results / "toy" / "lorad-s8-f4-linear-zero" / "toy-eval" / "fid.json").read_text())
    assert fid["provenance"]["feature_extractor"] == "toy_digit_classifier" and fid["provenance"]["count_gen"] == 40
    table = (results / "tables" / "table8.md").read_text()
    assert f"{fid['values']['fid']:.2f}" in table
    assert str(results / "toy" / "lorad-s8-f4-linear-zero" / "toy-eval" / "fid.json") in table
    for grid in (results / "toy").glob("*/toy-eval/grid.png"):
        assert grid.stat().st_size > 0
    models = len(config["distill"]["runs"]["toy"]) + 2 + len(config["distill"]["merges"]["toy"])  # + the teachers
    models += 2 * len(config["analysis"]["swaps"]["toy"])  # Fig. 2c's tnorm- and tdir- models
    assert len(list((results / "toy").glob("*/toy-eval/grid.png"))) == models
    assert (results / "fig16.png").stat().st_size > 0 and "fig16.png" in (results / "report.md").read_text()
    curve = (results / "toy" / "lorad-s8-f4-linear-zero" / "curve.csv").read_text().splitlines()
    assert curve[0].split(",")[:2] == ["step", "digit_accuracy"] and [r.split(",")[0] for r in curve[1:]] == ["0", "4"]
    accuracy = json.loads((results / "evaluator" / "classifier.json").read_text())["accuracy"]
    assert accuracy >= 0.95
    # the weights behind each number: the student, its teacher and the evaluator, and the software and device
    run = results / "toy" / "lorad-s8-f4-linear-zero"
    provenance = fid["provenance"]
    assert provenance["model_sha256"] == weights_sha256(run / "pipeline")
    assert provenance["teacher_sha256"] == weights_sha256(results / "backbones" / "toy")
    assert provenance["evaluator_sha256"] == weights_sha256(results / "evaluator")
    assert provenance["environment"] == json.loads(json.dumps(environment()))
    train = json.loads((run / "train.json").read_text())["provenance"]
    assert (train["student_sha256"], train["teacher_sha256"]) == (
        provenance["model_sha256"],
        provenance["teacher_sha256"],
    )


def test_rerun_has_nothing_to_do(toy_run):
    results, _ = toy_run
    again = subprocess.run(
        [sys.executable, "-m", "snakemake", "all", "-n", *toy_test_config(results)[0]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_rerun_from_scratch_gives_the_same_numbers(toy_run):
    """Runs are seeded: one ablation deleted and made again (`snakemake <its fid.json>`) reproduces its
    student bit for bit, hence its images and every number of its row."""
    import shutil

    results, _ = toy_run
    run_dir = results / "toy" / "lorad-s4-f2-conv-xavier"
    before = {
        name: json.loads((run_dir / "toy-eval" / name).read_text())["values"]
        for name in ("fid.json", "text_image.json")
    }
    weights = (run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    shutil.rmtree(run_dir)
    target = str(run_dir / "toy-eval" / "fid.json")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            target,
            str(run_dir / "toy-eval" / "text_image.json"),
            "--cores",
            "2",
            *toy_test_config(results)[0],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    after = {
        name: json.loads((run_dir / "toy-eval" / name).read_text())["values"]
        for name in ("fid.json", "text_image.json")
    }
    assert after == before
