"""The toy study (config/toy-study.yaml over config/toy.yaml, `make study`): its dry-run plans every run at
every seed, and a shortened study (.test/config/toy-study.yaml: DKD and LoRA at 2:1, two seeds, 4 generator
updates) runs end to end: seeds change the students and their images, a seed reproduces its run, the -g{N}
variant keeps the generator's updates, and the report gives means, standard errors, bootstrap intervals,
a band over seeds in Fig. 16 and a verdict per claim by its stated rule."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from dkd.report.seeds import VERDICTS
from dkd.vocabulary import SWAP_PREFIXES, with_seed
from tests.conftest import ROOT

STUDY = ("config/toy.yaml", "config/toy-study.yaml")
SHORT = ".test/config/toy-study.yaml"


def snakemake(*args, timeout=1200):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_the_study_dry_run_plans_every_run_at_every_seed(tmp_path):
    """Every run (the Table 2 methods also at 10:1), SwiftBrush v2's merge, the FT student's two swaps and
    every analysed run, at each of the N seeds; the two teachers once; every table of the toy and the
    study's table of both update ratios."""
    from snakemake.utils import update_config

    config: dict = {}
    for name in STUDY:
        update_config(config, yaml.safe_load((ROOT / name).read_text()))
    run = snakemake("all", "-n", "--configfile", *STUDY, "--config", f"results={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M)}
    seeds, runs = config["distill"]["seeds"], config["distill"]["runs"]["toy"]
    assert seeds > 1 and sum(name.endswith("-g10") for name in runs) == 4
    merges, swaps = len(config["distill"]["merges"]["toy"]), len(config["analysis"]["swaps"]["toy"])
    models = seeds * (len(runs) + merges + len(SWAP_PREFIXES) * swaps) + 2  # + the teacher with CFG and in one step
    tables = config["report"]["tables"]
    assert "ratios" in tables and "table2" in tables
    expected = {
        "params": 1,
        "toy_data": 1,
        "toy_backbone": 1,
        "toy_evaluator": 1,
        "reference_stats": 1,
        "distill": seeds * len(runs),
        "merge": seeds * merges,
        "swap": seeds * len(SWAP_PREFIXES) * swaps,
        "swap_delta": seeds * len(SWAP_PREFIXES) * swaps,
        "weights": seeds * len(config["analysis"]["weights"]["toy"]),
        **{rule: models for rule in ("generate_shard", "images", "features_metrics", "text_image")},
        **{name: 1 for name in tables},
        "fig16": 1,
        "report": 1,
        "all": 1,
    }
    assert counts == {**expected, "total": sum(expected.values())}
    planned = run.stdout
    for name in ("lorad-s8-f4-linear-zero-g10", "merged-swiftbrushv2", "tdir-ft-sfull-fft-linear-zero"):
        assert f"/toy/{with_seed(name, seeds - 1)}/toy-eval/fid.json" in planned, name
    assert f"-seed{seeds}/" not in planned


def test_the_validation_set_shares_no_noise_with_the_evaluation_set():
    """Image i of a set is sampled with noise seed `seed + i` (dkd.sampling.shards): the learning rates are
    selected on images whose noise no evaluation image uses, and on another draw of prompts."""
    from snakemake.utils import validate

    from dkd.toy.data import prompt_list

    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    validate(config, schema=str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))  # the defaults
    sets, toy = config["evaluation"]["sets"], config["toy"]
    val, test = (range(sets[s]["seed"], sets[s]["seed"] + sets[s]["count"]) for s in ("toy-val", "toy-eval"))
    assert not set(val) & set(test)
    assert sets["toy-val"]["prompts"] == "toy:val" and sets["toy-val"]["models"] == {}
    val_prompts = prompt_list(toy["val_prompts"], seed=toy["seed"] + 2)  # as the rule toy_data writes them
    assert val_prompts != prompt_list(toy["eval_prompts"], seed=toy["seed"] + 1)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The shortened study, run once: (results folder, its config)."""
    results = tmp_path_factory.mktemp("study") / "results"
    run = snakemake("all", "--cores", "2", "--configfile", SHORT, "--config", f"results={results}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return results, yaml.safe_load((ROOT / SHORT).read_text())


def _values(path):
    return json.loads(path.read_text())


def test_seeds_change_the_students_and_their_images(study):
    results, _ = study
    first, second = (results / "toy" / name for name in ("lorad-s8-f4-linear-zero", "lorad-s8-f4-linear-zero-seed1"))
    sha = [_values(run / "train.json")["provenance"]["student_sha256"] for run in (first, second)]
    assert sha[0] != sha[1]
    images = [sorted((run / "toy-eval" / "images").glob("*.png")) for run in (first, second)]
    assert len(images[0]) == len(images[1]) == 40
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(*images))
    fids = [_values(run / "toy-eval" / "fid.json")["values"]["fid"] for run in (first, second)]
    assert fids[0] != fids[1]


def test_a_seed_reproduces_its_run(study, tmp_path):
    """The second seed's run trained again from scratch in another results folder: the same student bit
    for bit (its weights' digest), the same images and the same FID."""
    results, _ = study
    name = "lorad-s8-f4-linear-zero-seed1"
    again = tmp_path / "again"
    for shared in ("backbones", "data", "evaluator", "reference-stats"):  # the inputs the study made, as they are
        shutil.copytree(results / shared, again / shared, copy_function=shutil.copy2)
    target = again / "toy" / name / "toy-eval" / "fid.json"
    run = snakemake(str(target), "--cores", "2", "--configfile", SHORT, "--config", f"results={again}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    digests = [_values(root / "toy" / name / "train.json")["provenance"]["student_sha256"] for root in (results, again)]
    assert digests[0] == digests[1]
    pictures = [sorted((root / "toy" / name / "toy-eval" / "images").glob("*.png")) for root in (results, again)]
    assert [p.read_bytes() for p in pictures[0]] == [p.read_bytes() for p in pictures[1]]
    assert _values(target)["values"] == _values(results / "toy" / name / "toy-eval" / "fid.json")["values"]


def test_the_ratio_variant_keeps_the_generator_updates(study):
    """lora-...-g2: two fake updates per generator update over twice the steps: as many generator updates
    (4) as the plain settings give, at both seeds."""
    results, config = study
    steps = config["distill"]["settings"]["max_steps"]
    for name in ("lora-s8-f4-linear-zero-g2", "lora-s8-f4-linear-zero-g2-seed1"):
        values = _values(results / "toy" / name / "train.json")["values"]
        assert (values["steps"], values["generator_updates"], values["fake_updates"]) == (2 * steps, steps, 2 * steps)


def test_the_fid_interval_is_in_every_fid_file(study):
    results, config = study
    for path in sorted(results.glob("toy/*/toy-eval/fid.json")):
        data = _values(path)
        assert data["values"]["fid_low"] < data["values"]["fid_high"], path
        assert data["provenance"]["bootstrap"]["samples"] == config["evaluation"]["bootstrap"]["samples"]


def test_the_report_gives_means_intervals_and_a_verdict_per_claim(study):
    results, config = study
    report = (results / "report.md").read_text()
    rule = "A claim holds when the mean of its per-seed differences over 2 seeds (models paired by seed) favours it"
    assert f"{rule} by more than t = 12.71 standard errors (Student's t, 95% two-sided, 1 degree of freedom" in report
    claims = re.findall(r"^\| (.+?) \| (holds|does not hold|not resolved|no data) \| (.*) \|$", report, flags=re.M)
    assert [claim for claim, _, _ in claims] == [spec["claim"] for spec in config["report"]["claims"]]
    assert all(verdict in VERDICTS and verdict != "no data" for _, verdict, _ in claims)
    dkd = [_values(results / "toy" / name / "toy-eval" / "fid.json")["values"]
           for name in ("lorad-s8-f4-linear-zero", "lorad-s8-f4-linear-zero-seed1")]  # fmt: skip
    mean = (dkd[0]["fid"] + dkd[1]["fid"]) / 2
    se = abs(dkd[0]["fid"] - dkd[1]["fid"]) / 2  # two values: sample std / sqrt(2) = |a - b| / 2
    table = (results / "tables" / "study.md").read_text()
    assert re.search(rf"\| DKD +\| +{mean:.2f} ± {se:.2f} \[\d\] \|", table), table
    assert "Every run over seeds" in report
    for values in dkd:  # each seed's FID with its bootstrap interval
        assert f"{values['fid']:.2f} [{values['fid_low']:.2f}, {values['fid_high']:.2f}]" in report


def test_fig16_draws_the_runs_mean_and_band_over_seeds(study):
    results, _ = study
    curves = [pd.read_csv(results / "toy" / name / "curve.csv")
              for name in ("lorad-s8-f4-linear-zero", "lorad-s8-f4-linear-zero-seed1")]  # fmt: skip
    summary = pd.read_csv(results / "fig16.csv")
    assert set(summary["label"]) == {"toy/lorad-s8-f4-linear-zero"} and (summary["n"] == 2).all()
    assert summary["fid_mean"].tolist() == pytest.approx(((curves[0]["fid"] + curves[1]["fid"]) / 2).tolist())
    lowest = pd.concat([c["fid"] for c in curves], axis=1).min(axis=1)
    assert summary["fid_min"].tolist() == pytest.approx(lowest.tolist())
