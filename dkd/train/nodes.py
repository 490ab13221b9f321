"""Several machines (SLURM nodes) for one distillation run.

The job's own process (rule ``distill``) runs, inside a SLURM allocation of N nodes,
``srun --nodes N --ntasks-per-node 1 python -m dkd.train.launch --node --processes G <job.json>``
(:func:`srun_command`). Each of these node tasks reads its place from the step's environment
(:func:`machines_from_slurm`: ``SLURM_NODEID``, ``SLURM_STEP_NUM_NODES``, the step's node list,
whose first node's address, ``NodeAddr`` in SLURM, is the rendezvous address, and a port derived
from the job id, so every node computes the same one without talking to the others) and starts its G ranks with
``accelerate launch --num_machines N --machine_rank i ...`` (:class:`Machines` gives the
arguments). The ranks of all nodes form one process group; rank 0 (on the first node) alone
writes checkpoints and logs, as on one node.

Signals: SLURM signals every task of the job on preemption or at the time limit, and ``srun``
forwards a signal sent to it to every task; each node task forwards it to its own ranks, which
checkpoint together and stop. A node task exits 0 when its ranks finished or stopped after a
signal (the job process then reads the checkpoint to tell which), 1 after a failure, on which
``srun --kill-on-bad-exit`` ends the other nodes' tasks instead of leaving their ranks waiting for
the dead ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PORT_BASE, PORT_SPAN = 20000, 20000  # rendezvous ports 20000-39999, one per job id


@dataclass(frozen=True)
class Machines:
    """Where a run's ranks live: ``count`` machines, this one's ``rank`` (0 = the main machine),
    and the main machine's ``address`` and ``port`` for the rendezvous (both needed when
    ``count > 1``; one machine lets the OS pick a free port)."""

    count: int = 1
    rank: int = 0
    address: str | None = None
    port: int = 0

    def __post_init__(self):
        for name in ("count", "rank", "port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"machines: {name} must be a whole number >= 0; got {value!r}.")
        if self.count < 1 or self.rank >= self.count:
            raise ValueError(
                f"machines: need count >= 1 and 0 <= rank < count; got count={self.count}, rank={self.rank}."
            )
        if self.count > 1 and (not self.address or not 0 < self.port < 65536):
            raise ValueError(
                f"machines: {self.count} machines need the main machine's address and a port in "
                f"1-65535; got address={self.address!r}, port={self.port}."
            )

    def accelerate_args(self, processes: int) -> list[str]:
        """``accelerate launch`` arguments for ``processes`` ranks on each machine (accelerate's
        ``--num_processes`` counts the ranks of all machines)."""
        args = ["--num_processes", str(processes * self.count), "--num_machines", str(self.count)]
        if self.count == 1:
            return args + ["--main_process_port", "0"]
        return args + [
            "--machine_rank",
            str(self.rank),
            "--main_process_ip",
            str(self.address),
            "--main_process_port",
            str(self.port),
        ]


def rendezvous_port(job_id: str) -> int:
    """The rendezvous port of SLURM job ``job_id``: the same on every node of the job, and two
    jobs sharing a node get different ports unless their ids differ by a multiple of 20000."""
    if not str(job_id).isdigit():
        raise ValueError(f"SLURM job id must be a number; got {job_id!r}.")
    return PORT_BASE + int(job_id) % PORT_SPAN


def _scontrol(*args: str) -> str:
    try:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(f"scontrol {' '.join(args)} failed: {err}") from err


def _hostnames(nodelist: str) -> list[str]:
    """SLURM's compressed node list (``gpu[01-03,07]``) expanded with ``scontrol show hostnames``."""
    hosts = _scontrol("show", "hostnames", nodelist).split()
    if not hosts:
        raise RuntimeError(f"scontrol expanded the SLURM node list {nodelist!r} to no host.")
    return hosts


def node_address(name: str) -> str:
    """The address SLURM reaches node ``name`` at (its ``NodeAddr``; the name itself where
    ``scontrol show node`` names none): node names need not be resolvable host names."""
    for field in _scontrol("show", "node", name, "-o").split():
        if field.startswith("NodeAddr=") and field != "NodeAddr=":
            return field.removeprefix("NodeAddr=")
    return name


def machines_from_slurm(env: Mapping[str, str] | None = None) -> Machines:
    """This node task's :class:`Machines`, from the environment ``srun`` gives each task."""
    env = os.environ if env is None else env
    count = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    missing = [
        name
        for name, value in (
            ("SLURM_NODEID", env.get("SLURM_NODEID")),
            ("SLURM_JOB_ID", env.get("SLURM_JOB_ID")),
            ("SLURM_STEP_NUM_NODES", count),
            ("SLURM_STEP_NODELIST", nodelist),
        )
        if not value
    ]
    if missing:
        raise RuntimeError(
            f"a node task of a multi-node run must run under srun inside a SLURM job; {', '.join(missing)} not set."
        )
    hosts = _hostnames(nodelist)
    if len(hosts) != int(count):
        raise RuntimeError(f"SLURM's step has {count} nodes but its node list {nodelist!r} names {len(hosts)}.")
    return Machines(
        count=int(count),
        rank=int(env["SLURM_NODEID"]),
        address=node_address(hosts[0]),
        port=rendezvous_port(env["SLURM_JOB_ID"]),
    )


def srun_command(job_file: Path, *, processes: int, nodes: int, cpus: int, gpus: bool = True) -> list[str]:
    """The job process's command: one node task per node, each with ``cpus`` CPUs and, with
    ``gpus``, one GPU per rank (``--gres=gpu:<processes>``, asked for explicitly rather than left to
    the step defaults of the SLURM version), starting ``processes`` ranks."""
    for name, value in (("processes", processes), ("nodes", nodes), ("cpus", cpus)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1; got {value!r}.")
    return [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus}",
        *([f"--gres=gpu:{processes}"] if gpus else []),
        "--kill-on-bad-exit=1",
        "--unbuffered",
        sys.executable,
        "-m",
        "dkd.train.launch",
        "--node",
        "--processes",
        str(processes),
        str(job_file),
    ]
