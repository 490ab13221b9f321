"""Fixtures shared by several test folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def short_toy_config(tmp_path: Path) -> Path:
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    results = tmp_path / "results"
    config["results"] = str(results)
    config["distill"]["settings"].update(max_steps=4, checkpoint_every=2, log_every=1, batch_size=8,
                                         per_device_batch=8)
    config["evaluation"]["sets"]["toy-eval"].update(count=40)
    config["evaluation"]["teachers"]["toy"]["steps"] = 5
    config["distill"]["curves"].update(count=20, every=100)
    config["toy"]["classifier"]["epochs"] = 8
    path = tmp_path / "toy-short.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """The shortened toy benchmark run once locally (`snakemake all --cores 2`): (results, config)."""
    tmp_path = tmp_path_factory.mktemp("toy")
    config = short_toy_config(tmp_path)
    run = subprocess.run([sys.executable, "-m", "snakemake", "all", "--cores", "2", "--configfile", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return tmp_path / "results", yaml.safe_load(config.read_text())
