"""Fixtures shared by several test folders."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

# `make test` runs two pytest-xdist workers. The tests of this machine's SLURM cluster (one per machine)
# form one work unit, handed out first: it is the longest. The toy run's tests come next, on the other
# worker, so that the shortened toy run (shared by both workers, see toy_run) is ready when the SLURM
# toy test asks for it: one work unit, in TOY's order (the HTML report reads every output before a toy
# test deletes one). The other tests go by file.
CLUSTER, TOY = "tests/cluster/", ("tests/workflow/test_report_html.py", "tests/workflow/test_toy.py")


def _rank(nodeid: str, files: tuple[str, ...]) -> int:
    """The position of the test's file in ``files`` (after them all if it is not there)."""
    return next((i for i, name in enumerate(files) if nodeid.startswith(name)), len(files))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class ClusterFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(CLUSTER):
                return CLUSTER
            return TOY[-1] if _rank(nodeid, TOY) < len(TOY) else super()._split_scope(nodeid)

    config.option.loadscopereorder = False  # keep the collection order of pytest_collection_modifyitems
    return ClusterFirst(config, log)


# The longest of the other files go first, so that the run does not end on one worker with one of them.
LONG = (
    "tests/workflow/test_workflow.py",
    "tests/workflow/test_study.py",
    "tests/train/test_nodes.py",
    "tests/train/test_ddp.py",
    "tests/train/test_launch.py",
    "tests/train/test_speed.py",
    "tests/workflow/test_commands.py",
)


def pytest_collection_modifyitems(items):
    items.sort(
        key=lambda item: (not item.nodeid.startswith(CLUSTER), _rank(item.nodeid, TOY), _rank(item.nodeid, LONG))
    )


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each
        torch.set_num_threads(1)


TOY_TEST_CONFIGS = ("config/toy.yaml", ".test/config/toy.yaml")  # the shortened toy: merged in this order


def toy_test_config(results: Path) -> tuple[list[str], dict]:
    """The shortened toy benchmark with its results in ``results``: Snakemake's arguments and the
    config it sees (the files merged key by key, as Snakemake merges them)."""
    from snakemake.utils import update_config

    config: dict = {}
    for name in TOY_TEST_CONFIGS:
        update_config(config, yaml.safe_load((ROOT / name).read_text()))
    config["results"] = str(results)
    return ["--configfile", *TOY_TEST_CONFIGS, "--config", f"results={results}"], config


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """The shortened toy benchmark run once per test session (`snakemake all --cores 2`): (results, config).
    Under pytest-xdist the workers share it: the first to ask runs it, the others wait (a file lock)."""
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared
    results, outcome = shared / "toy" / "results", shared / "toy" / "outcome.txt"
    args, config = toy_test_config(results)
    results.parent.mkdir(exist_ok=True)
    with open(shared / "toy.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not outcome.exists():
            run = subprocess.run(
                [sys.executable, "-m", "snakemake", "all", "--cores", "2", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            outcome.write_text("" if run.returncode == 0 else run.stdout[-3000:] + run.stderr[-3000:] or "failed")
    failure = outcome.read_text()
    assert not failure, failure
    return results, config
