"""tests/cluster/start_slurm.sh on a machine where another test cluster holds the system configuration:
one left by a killed test session is stopped and replaced; one whose session still runs is kept.
The clusters here link a configuration of their own (SLURM_TEST_SYSTEM_CONF), beside the session's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .conftest import START, free_ports


def _start(folder: Path, env: dict, owner: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(START), "start", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "SLURM_TEST_PORT": str(free_ports()), "SLURM_TEST_OWNER_PID": str(owner)},
    )


def _daemons(folder: Path) -> dict[str, int]:
    """The pid of each daemon the cluster of ``folder`` runs (its pid files)."""
    return {pid_file.stem: int(pid_file.read_text()) for pid_file in folder.glob("*.pid")}


def _runs(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""  # a zombie's command line is empty
    except FileNotFoundError:
        return False


def test_a_cluster_left_by_a_killed_test_session_is_stopped_and_replaced(cluster, tmp_path):
    system_conf = tmp_path / "etc" / "slurm.conf"
    env = {k: v for k, v in cluster.env.items() if k != "SLURM_CONF"}
    env["SLURM_TEST_SYSTEM_CONF"] = str(system_conf)
    first, second = tmp_path / "first", tmp_path / "second"
    session = subprocess.Popen(["sleep", "600"])  # the first cluster's test session
    try:
        assert _start(first, env, session.pid).returncode == 0
        assert system_conf.resolve() == (first / "slurm.conf").resolve()
        left = _daemons(first)
        assert len(left) == 4 and {"munged", "slurmctld", "slurmd-n2"} <= set(left)

        refused = _start(second, env, os.getpid())  # the first session still runs
        assert refused.returncode == 1 and "not replacing it" in refused.stderr
        assert system_conf.resolve() == (first / "slurm.conf").resolve()
        assert all(_runs(pid) for pid in left.values())

        session.kill()
        session.wait()
        taken = _start(second, env, os.getpid())
        assert taken.returncode == 0, taken.stderr
        assert "its test session is gone" in taken.stderr
        assert system_conf.resolve() == (second / "slurm.conf").resolve()
        assert not any(_runs(pid) for pid in left.values())
        nodes = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, "SLURM_CONF": str(second / "slurm.conf")},
            check=True,
        ).stdout
        assert {line.split()[1] for line in nodes.splitlines()} <= {"idle", "mix", "alloc"} and nodes
    finally:
        session.kill()
        for folder in (second, first):
            subprocess.run([str(START), "stop", str(folder)], env=env, timeout=120)
