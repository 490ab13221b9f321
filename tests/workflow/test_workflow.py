"""The Snakemake workflow: lint, schema validation, dry-run, and a real run of its rules."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def snakemake(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_lint_reports_nothing():
    run = snakemake("--lint")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Congratulations" in run.stdout + run.stderr


def test_config_typo_fails_at_parse_time_with_a_readable_message():
    run = snakemake("-n", "--config", "resutls=x")
    assert run.returncode != 0
    assert "resutls" in run.stdout + run.stderr


def test_dry_run_plans_every_target(tmp_path):
    run = snakemake("all", "-n", "--config", f"results={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"params\s+1", run.stdout)


def test_params_rule_writes_the_table_and_its_log(tmp_path):
    run = snakemake("all", "--cores", "1", "--config", f"results={tmp_path}")
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
