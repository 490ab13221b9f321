"""A real SLURM cluster on this machine (one node; a second one joins it in the partition `multi`
for multi-node jobs) for the tests of this folder, and the workflow run on it through the shipped
`slurm` profile, as a user runs it: `snakemake --profile slurm <targets>`.

The cluster is started once per session by tests/cluster/start_slurm.sh (slurm-wlm 22.05 and munge,
installed with apt when missing) and stopped at the end. It needs root on Debian/Ubuntu; elsewhere
these tests are skipped, with the reason, unless DKD_CLUSTER_TESTS=required (CI sets it: there, a
cluster that cannot start fails the run instead of hiding the tests). The profile's cluster-specific values come
from environment variables only: no GPU (DKD_SLURM_GPUS=0), one CPU per distillation, job states
from squeue (the test cluster keeps no accounting)."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "tests" / "cluster" / "start_slurm.sh"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
LOCK = Path(tempfile.gettempdir()) / "dkd-slurm-tests.lock"
T = TypeVar("T")

# Snakemake's status polling, shortened for the tests (the profile keeps the plugin's defaults).
POLLING = ("--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2")


def _cannot_run() -> str | None:
    """Why the cluster cannot be started here, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (starts munged, slurmctld and slurmd; installs slurm-wlm with apt)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "slurm-wlm is not installed and there is no apt-get to install it"
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.is_symlink():
        return f"{SYSTEM_CONF} exists: this machine belongs to another SLURM cluster"
    return None


def free_ports() -> int:
    """A port p with p, p + 1 and p + 2 free (slurmctld and the two slurmd); 6817 (SLURM's own) when
    it is free."""
    for port in (6817, *range(16817, 17817, 3)):
        try:
            with socket.socket() as a, socket.socket() as b, socket.socket() as c:
                for offset, sock in enumerate((a, b, c)):
                    sock.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
    raise RuntimeError("no three adjacent free ports for slurmctld and the two slurmd")


def _hold_machine(timeout: float = 1800):
    """An exclusive lock on this machine's test cluster (/etc/slurm/slurm.conf is one per machine):
    a second test session waits here for the first to end, then takes the lock; returns the open
    lock file (the lock lasts while it is open, and ends with this process however it ends)."""
    handle = open(LOCK, "a+")
    end = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > end:
                handle.close()
                pytest.fail(f"another test session held this machine's SLURM cluster ({LOCK}) for {timeout:.0f} s")
            time.sleep(5)


@dataclass(frozen=True)
class SlurmJob:
    id: str
    rule: str
    state: str


@dataclass(frozen=True)
class Cluster:
    folder: Path
    env: dict

    def run(self, *command: str, check: bool = True) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode:
            raise AssertionError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def jobs(self, rule: str | None = None) -> list[SlurmJob]:
        """Every job the cluster knows (finished ones too, for MinJobAge), oldest first; the plugin
        puts `rule_<name>_wildcards_...` in each job's comment."""
        jobs = []
        for line in self.run("squeue", "-h", "--states=all", "-o", "%i|%k|%T").splitlines():
            job_id, comment, state = line.split("|")
            name = comment.removeprefix("rule_").split("_wildcards")[0]
            if rule is None or name == rule:
                jobs.append(SlurmJob(job_id, name, state))
        return sorted(jobs, key=lambda job: int(job.id))

    def restarts(self, job_id: str) -> int:
        """How many times SLURM requeued the job (``scontrol show job``: Restarts=)."""
        fields = self.run("scontrol", "-o", "show", "job", job_id).split()
        return int(next(f for f in fields if f.startswith("Restarts=")).split("=")[1])

    def kill_processes(self, job_id: str, pattern: str) -> list[int]:
        """SIGKILL the job's processes whose command line contains ``pattern`` (the job's PIDs on
        this node from ``scontrol listpids``), as the kernel's OOM killer or a node failure would;
        returns the PIDs killed."""
        killed = []
        node = self.run("squeue", "-h", "-j", job_id, "-o", "%N").strip()  # two slurmd run on this host
        for line in self.run("scontrol", "listpids", job_id, node).splitlines()[1:]:
            pid = int(line.split()[0])
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                if pattern in command:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return killed

    def snakemake_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "snakemake", "--profile", "slurm", *POLLING, *args]

    def snakemake(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """Snakemake to the end, with the cluster's environment plus ``env``."""
        return subprocess.run(
            self.snakemake_command(*args),
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_snakemake(self, *args: str, log: Path, **env: str) -> subprocess.Popen:
        """Snakemake in the background (its own process group), with the cluster's environment plus
        ``env``, output to ``log``."""
        with open(log, "w") as out:
            return subprocess.Popen(
                self.snakemake_command(*args),
                cwd=ROOT,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def cancel_all(self) -> None:
        self.run("scancel", "--user", "root", check=False)


def wait_for(
    condition: Callable[[], T], *, timeout: float, what: str, process: subprocess.Popen = None, log: Path = None
) -> T:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds, or as soon as
    ``process`` (Snakemake) has exited, with its log."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.25)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    pytest.fail(f"waited {timeout:.0f} s for {what}; Snakemake: {process and process.poll()}\n{tail}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
    """Send ``sig`` to Snakemake's process group and wait for it to exit."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    return process.wait(timeout=timeout)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    reason = _cannot_run()
    if reason:
        (pytest.fail if os.environ.get("DKD_CLUSTER_TESTS") == "required" else pytest.skip)(
            f"one-node SLURM cluster: {reason}"
        )
    machine = _hold_machine()
    folder = tmp_path_factory.mktemp("slurm")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DKD_", "SLURM_", "SNAKEMAKE_"))}
    env.update(
        SLURM_TEST_PORT=str(free_ports()),
        DKD_GPU_COUNT="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    started = subprocess.run(
        [str(START), "start", str(folder)],
        env={**env, "SLURM_TEST_OWNER_PID": str(os.getpid())},
        capture_output=True,
        text=True,
        timeout=900,
    )
    try:
        if started.returncode:
            pytest.fail(f"start_slurm.sh failed:\n{started.stdout}\n{started.stderr}")
        env.update(
            SLURM_CONF=str(folder / "slurm.conf"),
            DKD_SLURM_GPUS="0",
            DKD_SLURM_DISTILL_CPUS="1",
            DKD_SLURM_STATUS_COMMAND="squeue",
        )
        cluster = Cluster(folder, env)
        try:
            yield cluster
        finally:
            cluster.cancel_all()
    finally:
        subprocess.run([str(START), "stop", str(folder)], env=env, timeout=120)
        machine.close()
