"""The data rules prepare a prompt set and its FID reference folder through dkd.data (COCO over a
file:// "server" built here; the real servers are not reachable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from dkd.data.coco import COCO2017
from dkd.data.download import OFFLINE_ENV

from ..data.test_coco import _fake
from .test_workflow import ROOT, snakemake


def test_data_coco_rule_writes_prompts_reference_and_log(tmp_path):
    fake = _fake(tmp_path / "server", COCO2017)
    data, results = tmp_path / "data", tmp_path / "results"
    configfile = tmp_path / "config.yaml"
    configfile.write_text(
        yaml.safe_dump(
            {
                "results": str(results),
                "paper": {"parameter_counts": "config/paper/parameter_counts.csv"},
                "data": {"root": str(data), "coco2017": {"count": 5, "seed": 1, "base_url": fake["base_url"]}},
            }
        )
    )
    overrides = ["--configfile", str(configfile)]
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", str(data / "coco2017-5" / "prompts.txt"), "--cores", "1", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    prompts = (data / "coco2017-5" / "prompts.txt").read_text().splitlines()
    images = (data / "coco2017-5" / "images.txt").read_text().splitlines()
    assert len(prompts) == len(images) == 5
    assert all(caption in fake["captions"][name] for caption, name in zip(prompts, images))
    reference = sorted(p.name for p in (data / "coco2017-5" / "reference").iterdir())
    assert reference == sorted(images)
    assert json.loads((data / "coco2017-5" / "info.json").read_text())["count"] == 5
    assert "wrote" in (results / "logs" / "data" / "coco2017-5.log").read_text()
    again = snakemake(str(data / "coco2017-5" / "prompts.txt"), "-n", *overrides)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_reference_stats_refuses_a_set_folder_made_with_another_reference_mode(tmp_path):
    """A COCO set prepared by hand with `--reference all` while the config leaves data.coco2017.reference
    at its default (the captions' images): the FID reference would not be the one the config describes,
    so the rule fails with one error naming both modes; the config asking for `all` passes that check."""
    from dkd.data import prepare_coco

    fake = _fake(tmp_path / "server", COCO2017)
    data, results = tmp_path / "data", tmp_path / "results"
    prepare_coco("coco2017", out=data, count=5, reference="all", base_url=fake["base_url"], progress=False)
    (data / "models").mkdir()
    (data / "models" / "inception.json").write_text('{"files": []}\n')  # as if fetched (no network here)
    evaluation = {
        "sets": {
            "coco2017": {
                "prompts": "data:coco2017",
                "count": 5,
                "shards": 1,
                "seed": 0,
                "reference": "data:coco2017",
                "metrics": ["fid"],
            }
        }
    }
    target = str(results / "reference-stats" / "coco2017.npz")
    logs = []
    for reference in (None, "all"):
        coco = {"count": 5, "base_url": fake["base_url"], **({"reference": reference} if reference else {})}
        configfile = tmp_path / f"config-{reference}.yaml"
        configfile.write_text(
            yaml.safe_dump(
                {
                    "results": str(results),
                    "paper": {"parameter_counts": "config/paper/parameter_counts.csv"},
                    "data": {"root": str(data), "coco2017": coco},
                    "evaluation": evaluation,
                }
            )
        )
        run = snakemake(target, "--cores", "1", "--configfile", str(configfile))
        assert run.returncode != 0 and "rule data_coco" not in run.stdout + run.stderr  # the folder is used as is
        logs.append((results / "logs" / "reference-stats" / "coco2017.log").read_text())
    assert "made with reference='all', the config asks for 'selected'" in logs[0]
    assert "made with reference" not in logs[1]  # past the check: it fails on the stand-in Inception marker
