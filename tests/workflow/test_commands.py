"""The commands the README and the Makefile tell users to type parse and plan (as dry-runs)."""

from __future__ import annotations

import re
import shlex

import pytest

from .test_workflow import ROOT, snakemake


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
            if line.startswith("snakemake ")]


def _makefile_demo_command() -> str:
    lines = [line for line in (ROOT / "Makefile").read_text().splitlines() if " snakemake " in line]
    assert len(lines) == 1, lines
    return lines[0][lines[0].index("snakemake "):]


def test_readme_lists_workflow_commands():
    assert len(_readme_commands()) >= 4


@pytest.mark.parametrize("command", [_makefile_demo_command(), *_readme_commands()])
def test_documented_command_plans(command):
    """`make demo` and each README `snakemake ...` line, with `-n` (nothing is written)."""
    args = shlex.split(command)[1:]
    run = snakemake(*args, "-n")
    assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
    assert re.search(r"^total\s+\d+$", run.stdout, flags=re.M) or "Nothing to be done" in run.stdout, run.stdout
