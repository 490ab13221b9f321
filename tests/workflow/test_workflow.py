"""The Snakemake workflow: lint, schema validation, dry-run, and a real run of its rules."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from dkd.runs import parse_run_name

from .downstream_plan import downstream_jobs

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")


def snakemake(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def tiny_target(target: str, results: Path) -> Path:
    """Make one target of config/tiny.yaml under ``results`` (2 cores); its failure shows the log's tail."""
    run = snakemake(target, "--cores", "2", "--configfile", "config/tiny.yaml", "--config", f"results={results}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return results


@pytest.mark.parametrize("configfile", [[], ["--configfile", "config/toy.yaml"], ["--configfile", "config/tiny.yaml"]])
def test_lint_reports_nothing(configfile):
    run = snakemake("--lint", *configfile)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Congratulations" in run.stdout + run.stderr


def test_config_typo_fails_at_parse_time_with_a_readable_message():
    run = snakemake("-n", "--config", "resutls=x")
    assert run.returncode != 0
    assert "resutls" in run.stdout + run.stderr


@pytest.mark.parametrize(
    "value,valid",
    [(True, True), (["BasicTransformerBlock", "ResnetBlock2D"], True), ("ResnetBlock2D", False), ([], False)],
)
def test_schema_compile_blocks(value, valid):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["distill"]["settings"]["compile_blocks"] = value
    schema = str(ROOT / "workflow/schemas/config.schema.yaml")
    if valid:
        validate(config, schema=schema)
    else:
        with pytest.raises(WorkflowError, match="compile_blocks"):
            validate(config, schema=schema)


def test_the_schema_fills_in_the_defaults():
    """A config with only the required keys gets every default of config/README.md from the schema."""
    from snakemake.utils import validate

    config = {
        "results": "r",
        "paper": {"parameter_counts": "p.csv"},
        "evaluation": {"sets": {"s": {"prompts": "p", "count": 4}}},
    }
    validate(config, schema=SCHEMA)
    assert config["seed"] == 0 and config["data"]["root"] == "data"
    assert config["distill"] == {
        "settings": {},
        "scorer": "paper",
        "objectives": {},
        "merges": {},
        "run_settings": {},
        "seeds": 1,
        "runs": {},
    }
    evaluation = config["evaluation"]
    assert evaluation["bootstrap"] == {"samples": 0, "level": 0.95, "seed": 0}
    assert (evaluation["batch_size"], evaluation["dtype"], evaluation["evaluator"]) == (16, "float32", "paper")
    assert evaluation["sets"]["s"] == {"prompts": "p", "count": 4, "shards": 1, "seed": 0, "metrics": []}
    assert evaluation["published"] == {"catalog": "config/published.yaml", "models": {}}
    assert evaluation["hps"] == {"sets": {}, "version": "v2.0"} and evaluation["timing"] == {"models": {}}
    released = {"catalog": "config/released.yaml", "pairs": [], "min_ratio": 5}
    assert config["analysis"] == {"weights": {}, "include_conv": False, "released": released, "swaps": {}}
    assert config["toy"]["teacher_weights"] == "config/toy/teacher.safetensors"
    toy = config["toy"]
    assert (toy["train_prompts"], toy["eval_prompts"], toy["val_prompts"], toy["min_accuracy"]) == (
        4000,
        500,
        500,
        0.95,
    )


def _job_counts(stdout: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", stdout, flags=re.M)}


def test_paper_dry_run_plans_every_run_model_and_table(tmp_path):
    """config/config.yaml: the data, 20 distillation runs (DKD and its ablations; the baselines SiD-LSG
    on SD1.5 and SD2.1, SwiftBrush on SD2.1 and PixArt-alpha, PG-SB on PixArt-alpha, SwiftBrush v2's two
    schemes on SD2.1) and their merge, every model (runs, the merge, teachers, 7 published checkpoints) on
    COCO2014-30k (10 shards) and COCO2017-5k (2 shards), the seven SD1.5 models of Table 6 on the four HPSv2
    style sets, the timing of the 20 models of Tables 4 and 5, the weight analysis (our runs and 13 released
    models), DMD2's released generator and the FT run with SD1.5's norms and with its directions (Fig. 2c),
    Fig. 16 and the report; each table target resolves."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    overrides = ["--config", f"results={tmp_path / 'results'}", f"data={{root: {tmp_path / 'data'}}}"]
    run = snakemake("all", "-n", *overrides)
    assert run.returncode == 0, run.stdout + run.stderr
    evaluation = config["evaluation"]
    runs = sum(len(names) for names in config["distill"]["runs"].values())
    published = sum(len(names) for names in evaluation["published"]["models"].values())
    merged = sum(len(names) for names in config["distill"]["merges"].values())
    swapped = 2 * sum(len(names) for names in config["analysis"]["swaps"].values())  # Fig. 2c: tnorm-, tdir-
    models = runs + len(evaluation["teachers"]) + published + merged + swapped  # + each backbone's teacher row
    sets = evaluation["sets"]
    per_set = {
        name: sum(len(m) for m in spec["models"].values()) if "models" in spec else models
        for name, spec in sets.items()
    }
    timed = sum(len(names) for names in evaluation["timing"]["models"].values())
    assert (runs, published, swapped, models, timed) == (20, 7, 4, 35, 20)
    assert per_set == {
        "coco2014": 35,
        "coco2017": 35,
        "hpsv2-anime": 7,
        "hpsv2-photo": 7,
        "hpsv2-concept-art": 7,
        "hpsv2-paintings": 7,
    }
    scored = {name: n for name, n in per_set.items() if sets[name].get("metrics")}
    expected = {
        "params": 1,
        "data_coco": 2,
        "data_hpsv2": 1,
        "data_journeydb": 1,
        "distill": runs,
        "merge": merged,
        "generate_shard": sum(n * sets[name].get("shards", 1) for name, n in per_set.items()),
        "images": sum(per_set.values()),
        "reference_stats": 2,
        "features_metrics": sum(scored.values()),
        "text_image": sum(scored.values()),
        "hps": 7,
        "timing": timed,
        "weights": 4,
        "swap": 2,  # our FT run with SD1.5's norms / directions (Fig. 2c)
        "swap_published": 2,  # DMD2's released generator with SD1.5's norms / directions
        "swap_delta": swapped,  # the fig2c table (COCO2014)
        "released_weights": len(config["analysis"]["released"]["pairs"]),  # Fig. 2 on released models (CPU)
        "fig16": 1,
        "report": 1,
        "all": 1,
        # + Inception, CLIP, HPS, the scorer, SD-Turbo's U-Net, and each released pair's weights
        "fetch_model": len(config["backbones"]) + published + 5 + len(config["analysis"]["released"]["pairs"]),
        **{name: 1 for name in config["report"]["tables"]},  # each table's own rule
        **downstream_jobs(config["downstream"]),  # the report's Downstream section
    }
    expected["fetch_model"] += expected.pop("downstream_fetch")
    assert _job_counts(run.stdout) == {**expected, "total": sum(expected.values())}
    # every job that loads pretrained files from the hub waits for the local rule that fetched them
    needs = {
        "distill": lambda b, m: {f"teacher-{b}"},
        "weights": lambda b, m: {f"teacher-{b}"},
        "released_weights": lambda b, m: {f"released-{m[4:]}"},
        "generate_shard": lambda b, m: (
            {f"published-{m.split('pub-', 1)[1]}"} if "pub-" in m else {f"teacher-{b}"} if m == "teacher" else set()
        ),
        "swap_published": lambda b, m: {f"teacher-{b}", f"published-{m.split('pub-', 1)[1]}"},
        "reference_stats": lambda b, m: {"inception"},
        "features_metrics": lambda b, m: {"inception"},
        "text_image": lambda b, m: {"clip"},
        "hps": lambda b, m: {"hps"},
    }
    jobs = re.findall(r"^rule (\w+):\n    input: (.*)\n    output: (.*)$", run.stdout, flags=re.M)
    checked = 0
    for rule, inputs, outputs in jobs:
        if rule in needs:
            found = re.search(r"results/([^/,]+)/([^/,]+)/", outputs)
            backbone, model = found.groups() if found else ("", "")
            assert needs[rule](backbone, model) <= set(re.findall(r"models/([\w.-]+)\.json", inputs)), (rule, inputs)
            checked += 1
    assert checked == sum(expected[rule] for rule in needs)
    # `snakemake downloads` (with network, before HF_HUB_OFFLINE=1): the data and fetch rules (local), nothing else
    run = snakemake("downloads", "-n", *overrides)
    assert run.returncode == 0, run.stdout + run.stderr
    fetched = {rule: expected[rule] for rule in ("data_coco", "data_hpsv2", "data_journeydb", "fetch_model")}
    assert _job_counts(run.stdout) == {**fetched, "downloads": 1, "total": sum(fetched.values()) + 1}
    targets = [*config["report"]["tables"], "fig16"]  # each a named target (one call: each job planned once)
    run = snakemake(*targets, "-n", *overrides)
    assert run.returncode == 0 and all(_job_counts(run.stdout).get(t) == 1 for t in targets), run.stdout + run.stderr


@pytest.mark.parametrize("evaluator", ["paper", "toy"])
def test_a_run_with_the_clip_loss_gets_its_scorer(evaluator, tmp_path):
    """A PG-SB run (the clamped CLIP loss) waits for its scorer's files: TAESD and ViT-B-32 fetched
    (`snakemake downloads` plans them), or the toy's digit classifier; a DKD run for neither."""
    runs = "{sd15: [pgsb-ft-sfull-flora64-linear-zero, lorad-s64-f32-linear-zero]}"  # the latter: no Fig. 16 curve
    overrides = [f"results={tmp_path}", f"distill={{runs: {runs}}}", f"evaluation={{evaluator: {evaluator}}}"]
    run = snakemake("all", "-n", "--config", *overrides)
    assert run.returncode == 0, run.stdout + run.stderr
    pattern = r"^rule distill:\n    input: (.*)\n    output: \S*/(\S+)/pipeline/"
    inputs = {name: files for files, name in re.findall(pattern, run.stdout, flags=re.M)}
    scorer = "models/scorer.json" if evaluator == "paper" else "evaluator/classifier.json"
    assert scorer in inputs["pgsb-ft-sfull-flora64-linear-zero"]
    assert scorer not in inputs["lorad-s64-f32-linear-zero"]
    if evaluator == "paper":
        downloads = snakemake("downloads", "-n", "--config", *overrides)
        assert "models/scorer.json" in downloads.stdout, downloads.stdout


def test_params_rule_writes_the_table_and_its_log(tmp_path):
    run = snakemake(f"{tmp_path}/params.md", "--cores", "1", "--config", f"results={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    table = (tmp_path / "params.md").read_text()
    assert table.count("| yes ") == 16 and "| NO " not in table
    assert "16 rows, 0 mismatches" in (tmp_path / "logs" / "params.log").read_text()
    assert not list(tmp_path.glob(".*.tmp"))


def test_conda_env_pins_equal_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "dkd.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip if "==" in p) == sorted(project)


def test_tiny_config_runs_sd_and_pixart_end_to_end(tmp_path):
    """config/tiny.yaml: tiny latent-space teachers (SD, PixArt) built by the workflow, distilled with
    LoRaD and FT, exported, and evaluation images generated in shards for every student and the
    multi-step teacher (diffusers' pipeline)."""
    run = snakemake("all", "--cores", "2", "--configfile", "config/tiny.yaml", "--config", f"results={tmp_path}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    config = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    from dkd.sampling import OneStepPipeline

    for backbone, runs in config["distill"]["runs"].items():
        for name in runs:
            folder = tmp_path / backbone / name
            assert (folder / "pipeline" / "model_index.json").is_file()
            spec = parse_run_name(backbone, name)
            assert (folder / "adapter").is_dir() == (spec.student.method != "ft")
            steps = [line.split(",")[0] for line in (folder / "train" / "log.csv").read_text().splitlines()[1:]]
            assert steps == ["1", "2", "3"]
            assert "exported" in (tmp_path / "logs" / backbone / name / "distill.log").read_text()
            cost = json.loads((folder / "train.json").read_text())["values"]  # Table 5: 1 CPU process, 3 steps
            assert (
                (cost["steps"], cost["processes"]) == (3, 1)
                and cost["train_hours"] > 0
                and cost["gpu_days"] == pytest.approx(cost["train_hours"] / 24)
            )
            trained = json.loads((folder / "train" / "config.json").read_text())  # distill.run_settings.<run>
            objective = trained["objective"]
            assert (
                trained["generator_every"],
                trained["optim_fake"]["lr"],
                objective["name"],
                objective["guidance_scale"],
                objective["fake_guidance_scale"],
                objective["fake_t_range"],
                objective["t_range"],
                trained["optim_fake"]["grad_clip"],
                trained["optim_student"]["betas"],
            ) == {  # the FT run: DMD2's settings; the baselines: their hooks and optimisers; the rest defaults
                "ft-sfull-fft-linear-zero": (2, 1e-5, "dkd", 1.75, 1.0, [0.0, 1.0], [0.02, 0.98], 10.0, [0.9, 0.999]),
                "sidlsg-ft-sfull-fft-linear-zero": (
                    1, 1e-5, "sid_lsg", 1.5, 1.5, [0.02, 0.979], [0.02, 0.979], None, [0.0, 0.999]
                ),
                "swiftbrush-ft-sfull-flora4-linear-zero": (
                    1, 1e-3, "swiftbrush", 4.5, 4.5, [0.0, 1.0], [0.02, 0.98], 1.0, [0.9, 0.999]
                ),
                "pgsb-ft-sfull-flora4-linear-zero": (
                    1, 1e-3, "pg_sb", 4.5, 4.5, [0.0, 1.0], [0.02, 0.98], 1.0, [0.9, 0.999]
                ),
                "sbv2-lora-s4-flora4-linear-zero": (
                    1, 1e-3, "swiftbrush_v2", 4.5, 4.5, [0.0, 1.0], [0.02, 0.98], 1.0, [0.9, 0.999]
                ),
            }.get(name, (1, 1e-2, "dkd", 1.5, 1.0, [0.02, 0.98], [0.02, 0.98], 10.0, [0.9, 0.999]))  # fmt: skip
            if spec.fake.method == "lora":  # SwiftBrush's LoRA teacher (PG-SB's, SwiftBrush v2's)
                scale = {"swiftbrush": 108 / 64, "pg_sb": 2.0, "swiftbrush_v2": 2.0}[spec.objective]
                assert (trained["fake"]["targets"], trained["fake"]["alpha"]) == (["to_q", "to_v"], scale * 4)
            if spec.objective in ("pg_sb", "swiftbrush_v2"):  # the clamped CLIP loss ran, its weight 0.1 -> 0
                rows = list(csv.DictReader((folder / "train" / "log.csv").open()))
                assert [float(r["clip_weight"]) for r in rows] == pytest.approx([0.1, 0.05, 0.0])
                assert all(-1 <= float(r["clip_score"]) <= 1 for r in rows)
            student_info = json.loads((folder / "pipeline" / "dkd_student.json").read_text())
            assert (student_info["objective"], student_info["t_init"], student_info["scaled_input"]) == (
                spec.objective, 625 if spec.objective == "sid_lsg" else 999, spec.objective == "sid_lsg"
            )  # fmt: skip
            for model in [name] + (["teacher"] if backbone in config["evaluation"]["teachers"] else []):
                summary = json.loads((tmp_path / backbone / model / "tiny-eval" / "images.json").read_text())
                assert summary["count"] == 6 and summary["shards"] == 2
                images = (tmp_path / backbone / model / "tiny-eval" / "images").iterdir()
                assert sorted(p.name for p in images if not p.name.startswith(".")) == [
                    f"{i:05d}.png" for i in range(6)
                ]
    images = OneStepPipeline.from_pretrained(tmp_path / "tiny-sd" / "lorad-s4-f2-linear-zero" / "pipeline")(
        ["a handwritten digit seven"], [0]
    )
    assert images[0].size == (16, 16)
    from dkd.backbones import load_denoiser  # the merge of two runs: their denoisers' mean, then evaluated

    merged, first, second = (
        load_denoiser("tiny-sd", str(tmp_path / "tiny-sd" / model / "pipeline")).state_dict()
        for model in ("merged-lorad_ft", "lorad-s4-f2-linear-zero", "ft-sfull-fft-linear-zero")
    )
    assert all(torch.allclose(merged[k], (first[k].double() / 2 + second[k].double() / 2).float()) for k in merged)
    assert (
        json.loads((tmp_path / "tiny-sd" / "merged-lorad_ft" / "tiny-eval" / "images.json").read_text())["count"] == 6
    )
    for model in config["evaluation"]["timing"]["models"]["tiny-sd"]:  # Table 5's rule, on the CPU
        timing = json.loads((tmp_path / "tiny-sd" / model / "timing.json").read_text())
        assert timing["values"]["inference_s"] > 0 and timing["evalset"] is None
        assert timing["provenance"]["repeats"] == 2 and len(timing["provenance"]["times_s"]) == 2
        assert timing["provenance"]["image_size"] == [16, 16]
    again = snakemake("all", "-n", "--configfile", "config/tiny.yaml", "--config", f"results={tmp_path}")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_bad_run_name_fails_at_parse_time(tmp_path):
    bad = tmp_path / "bad.yaml"
    config = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    config["distill"]["runs"] = {"tiny-sd": ["lorad-256-f32-linear-zero"]}
    bad.write_text(yaml.safe_dump(config))
    run = snakemake("-n", "--configfile", str(bad))
    assert run.returncode != 0 and "lorad-256-f32-linear-zero" in run.stdout + run.stderr


def test_toy_dry_run_plans_every_table_target(tmp_path):
    """Each report table of config/toy.yaml is a named target (its rule renders results/tables/<table>.md),
    and `all` plans the whole benchmark:
    the toy's data, teacher and evaluator, 16 distillation runs (the reproduced baselines included) and
    SwiftBrush v2's merge, 21 models' images and metrics (the FT student's two swaps of Fig. 2c included),
    4 weight analyses, the convergence plot and the report."""
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    overrides = ["--config", f"results={tmp_path}"]
    run = snakemake("all", "-n", "--configfile", "config/toy.yaml", *overrides)
    assert run.returncode == 0, run.stdout + run.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M))
    runs, swapped = len(config["distill"]["runs"]["toy"]), 2 * len(config["analysis"]["swaps"]["toy"])
    merged = len(config["distill"]["merges"]["toy"])  # SwiftBrush v2's merge of its two schemes
    models = runs + 2 + swapped + merged  # the teacher with CFG and in one step, the FT student's swaps (Fig. 2c)
    assert {k: int(v) for k, v in counts.items()} == {
        "params": 1,
        "toy_data": 1,
        "toy_backbone": 1,
        "toy_evaluator": 1,
        "distill": runs,
        "generate_shard": models,
        "images": models,
        "reference_stats": 1,
        "features_metrics": models,
        "text_image": models,
        "weights": len(config["analysis"]["weights"]["toy"]),
        "swap": swapped,
        "swap_delta": swapped,
        "merge": merged,
        "report": 1,
        "fig16": 1,
        "all": 1,
        **{name: 1 for name in config["report"]["tables"]},  # each table's own rule
        "total": 5 + runs + 4 * models + 7 + 2 * swapped + merged + len(config["report"]["tables"]),
    }
    targets = [*config["report"]["tables"], "fig16"]
    run = snakemake(*targets, "-n", "--configfile", "config/toy.yaml", *overrides)
    assert run.returncode == 0 and all(_job_counts(run.stdout).get(t) == 1 for t in targets), run.stdout + run.stderr
