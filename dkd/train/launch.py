"""Training a distillation job on one process or on several (data parallel, ``accelerate launch``).

:func:`run_distillation` trains a :class:`~dkd.train.job.DistillJob` in this process
(``processes=1``) or starts ``processes`` ranks with accelerate's launcher (``python -m
accelerate.commands.launch --multi_gpu ...``, torchrun underneath), each running ``python -m
dkd.train.launch <job.json>``.

The parent process streams the ranks' output into its log (``sys.stderr``: the rule's log under
``dkd.io.rule_log``), forwards SIGTERM/SIGUSR1 (SLURM's preemption and time-limit signals) to the
ranks, which save a checkpoint and stop (it then raises ``TrainingInterrupted``), and turns a
failed rank into one :class:`LaunchError`. A finished run is then loaded by the parent alone, from
its last checkpoint (:func:`dkd.train.job.finished_run`); only the parent writes the job's declared
outputs.

The rendezvous port is chosen by accelerate (``--main_process_port 0``: the OS picks a free port),
so two jobs on one node do not collide. Several nodes (``nodes > 1``, inside a SLURM allocation):
one node task per node under ``srun``, each starting its node's ranks (``dkd.train.nodes``).
``CUDA_VISIBLE_DEVICES`` (set by SLURM or ``dkd.gpus.claim_gpu``) is inherited. On a machine without
CUDA the ranks run on the CPU (gloo): the launch is the same but for ``ACCELERATE_USE_CPU=true`` in
their environment (accelerate's ``--cpu`` launcher starts one process; several need MPI).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

import torch

from ..io import exclusive
from .checkpoint import latest_checkpoint, load_state, training_cost
from .job import (
    Distilled,
    DistillJob,
    curve_hook,
    finished_run,
    load_job_scorer,
    load_job_teacher,
    read_job_prompts,
    run_is_finished,
)
from .loop import TrainingInterrupted, distill
from .nodes import Machines, machines_from_slurm, srun_command
from .processes import forward_signals, stream_output
from .signals import StopSignals

log = logging.getLogger(__name__)

INTERRUPTED_EXIT = 75  # a rank's exit code after TrainingInterrupted (EX_TEMPFAIL: try again)
_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)  # torchrun's summary


class LaunchError(RuntimeError):
    """A training process failed (not a signal): its exit code and where its traceback is."""


def run_distillation(
    job: DistillJob,
    *,
    processes: int = 1,
    nodes: int = 1,
    cpus: int | None = None,
    cpu: bool | None = None,
    log_stream: IO[str] | None = None,
) -> Distilled:
    """Train (or resume) ``job``'s run and return it finished, loaded in this process.

    ``processes`` 1: in this process (``distill``). More: that many ranks through accelerate's
    launcher (one per GPU of ``CUDA_VISIBLE_DEVICES``; on the CPU with gloo if ``cpu``, which
    defaults to "no CUDA here"), their output streamed into ``log_stream`` (default ``sys.stderr``),
    then the finished run loaded here. A run already finished is loaded, never trained again.
    Raises ``TrainingInterrupted`` after SIGTERM/SIGUSR1 (a checkpoint was written; the next attempt
    resumes), :class:`LaunchError` if a rank fails, ``dkd.io.LockedError`` if another process trains
    the same run (``<train_dir>/lock``: e.g. a SLURM job left running by a Snakemake that was killed).

    ``nodes`` > 1: ``processes`` ranks on each of ``nodes`` machines of this SLURM allocation, one
    ``srun`` node task per machine (``dkd.train.nodes``), each with ``cpus`` CPUs (default: as many as
    this process may use)."""
    for name, value in (("processes", processes), ("nodes", nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1; got {value!r}.")
    train_dir = Path(job.train_dir)
    with exclusive(train_dir / "lock", f"the run in {train_dir}"):
        return _run_distillation(job, processes, nodes, cpus, cpu, log_stream)


def _run_distillation(
    job: DistillJob, processes: int, nodes: int, cpus: int | None, cpu: bool | None, log_stream
) -> Distilled:
    train_dir = Path(job.train_dir)
    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    device = torch.device("cpu" if cpu or not torch.cuda.is_available() else "cuda")
    finished = run_is_finished(train_dir)
    stream = log_stream if log_stream is not None else sys.stderr
    if nodes > 1 and not finished:
        if shutil.which("srun") is None:
            raise RuntimeError(
                f"a run on {nodes} nodes needs a SLURM allocation of {nodes} nodes (srun not found); "
                "run it through the slurm profile (DKD_SLURM_DISTILL_NODES) or on one node."
            )
        job.write()
        command = srun_command(
            job.path.resolve(),
            processes=processes,
            nodes=nodes,
            cpus=cpus or len(os.sched_getaffinity(0)),
            gpus=not cpu,
        )
        received = _supervise(job, command, dict(os.environ), stream, processes * nodes, ranks=False)
        if not run_is_finished(train_dir):  # the node tasks stopped cleanly after a signal
            raise _interrupted(
                job,
                received,
                processes * nodes,
                "a signal to the node tasks (srun exited with code 0)",
                getattr(stream, "name", "the job's log"),
            )
        finished = True
    elif processes > 1 and not finished:
        job.write()
        _launch(job, processes, cpu=cpu, stream=stream)
        finished = True
    teacher, prompts, scorer = load_job_teacher(job, device), read_job_prompts(job), load_job_scorer(job, device)
    if finished:
        result = finished_run(job.config, teacher, prompts, train_dir, scorer)
    else:
        hook = curve_hook(job, teacher, device)
        result = distill(job.config, teacher, prompts, train_dir, evaluate=hook, scorer=scorer)
    state = load_state(result.checkpoint)
    return Distilled(job.config, teacher, result, training_cost(state), state.get("attempts", []))


def launch_command(
    job_file: Path, processes: int, *, mixed_precision: str, threads: int, machines: Machines = Machines()
) -> list[str]:
    """``accelerate launch`` of ``processes`` ranks on this machine running ``python -m
    dkd.train.launch <job_file>``, ``threads`` CPU threads per rank; on one machine a free
    rendezvous port picked by the OS, on several the rendezvous of ``machines``."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        *machines.accelerate_args(processes),
        "--mixed_precision",
        mixed_precision,
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        str(threads),
        "--module",
        "dkd.train.launch",
        str(job_file),
    ]


def _launch(
    job: DistillJob,
    processes: int,
    *,
    cpu: bool,
    stream: IO[str],
    machines: Machines = Machines(),
    threads: int | None = None,
) -> None:
    """Run this machine's ranks to the end (``threads`` CPU threads in all, default torch's), streaming
    their output into ``stream`` and forwarding signals."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    command = launch_command(
        job.path.resolve(),
        processes,
        mixed_precision=job.config.mixed_precision,
        threads=max(1, (threads or torch.get_num_threads()) // processes),
        machines=machines,
    )
    log.info("training on %d processes (%s): %s", processes, "CPU" if cpu else "GPU", " ".join(command))
    _supervise(job, command, env, stream, processes * machines.count, ranks=True)


def _interrupted(job: DistillJob, received: list[int], processes: int, source: str, where: str) -> TrainingInterrupted:
    """The error of an attempt stopped by a signal (``received`` by this process, or ``source``)."""
    checkpoint = latest_checkpoint(Path(job.train_dir) / "checkpoints")
    if received:
        source = f"signal {received[0]} (forwarded to the {processes} training processes)"
    at = (
        f"at step {load_state(checkpoint)['step']}; checkpoint {checkpoint}; the next attempt resumes from it"
        if checkpoint
        else "before the first checkpoint; the next attempt starts over"
    )
    return TrainingInterrupted(f"{source} {at} (log: {where}).")


def _supervise(
    job: DistillJob, command: list[str], env: dict, stream: IO[str], processes: int, *, ranks: bool
) -> list[int]:
    """Run ``command`` (accelerate's launcher, or ``srun`` of the node tasks) to the end, streaming
    its output into ``stream``; a received SIGTERM/SIGUSR1 goes to the launcher's children (the
    ranks, ``ranks=True``) or to ``srun`` itself, which forwards it to every node task. Raises
    ``TrainingInterrupted`` after a signal, ``LaunchError`` after a failure; returns the signals
    received (``srun`` exits 0 when its node tasks stopped after one)."""
    where = getattr(stream, "name", "the job's log")
    forwarded: set[tuple[int, int]] = set()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with StopSignals(on_signal=lambda _: forward_signals(proc, stop.received, forwarded, ranks)) as stop:
            tail = stream_output(proc, stream, lambda: forward_signals(proc, stop.received, forwarded, ranks))
            code = proc.wait()
    finally:
        if proc.poll() is None:  # this process was stopped otherwise (an exception): end the ranks
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
    received = stop.received
    if code == 0:
        return received
    checkpoint = latest_checkpoint(Path(job.train_dir) / "checkpoints")
    cause = _ROOT_CAUSE.findall(tail)
    rank, rank_code = (int(cause[-1][0]), int(cause[-1][1])) if cause else (None, None)
    launcher = "accelerate launch" if ranks else "srun"
    if received or rank_code == INTERRUPTED_EXIT:
        raise _interrupted(
            job,
            received,
            processes,
            f"a signal to the training processes (rank {rank} exited with code {rank_code})",
            where,
        )
    which = f"rank {rank} exited with code {rank_code}" if cause else "a rank failed"
    raise LaunchError(
        f"distillation on {processes} processes failed: {which} ({launcher} exit code {code}); "
        f"the ranks' output and traceback are in {where}; latest checkpoint: {checkpoint or 'none'}."
    )


def _rank_main(job_file: str) -> int:
    """One rank: train the job (``distill`` under the launcher's process group); exit code
    ``INTERRUPTED_EXIT`` after a signal, so that the parent tells it from a failure."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    job = DistillJob.read(job_file)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format=f"%(asctime)s rank {state.process_index} %(name)s %(message)s"
    )
    device = torch.device(state.device)
    teacher = load_job_teacher(job, device)
    try:
        distill(
            job.config,
            teacher,
            read_job_prompts(job),
            job.train_dir,
            evaluate=curve_hook(job, teacher, device),
            scorer=load_job_scorer(job, device),
        )
    except TrainingInterrupted as err:
        log.warning("rank %d stopped: %s", state.process_index, err)
        return INTERRUPTED_EXIT
    return 0


def _node_main(job_file: str, processes: int) -> int:
    """One node task of a multi-node run (under ``srun --kill-on-bad-exit``): this node's ranks, to
    the end. Exit code 0 when they finished or stopped after a signal (the job process tells the two
    apart from the checkpoint), 1 after a failure: srun then ends the other nodes' tasks."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s node %(name)s %(message)s")
    try:
        job, machines = DistillJob.read(job_file), machines_from_slurm()
        log.info("node %d of %d (rendezvous %s:%d)", machines.rank, machines.count, machines.address, machines.port)
        cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        _launch(
            job,
            processes,
            cpu=not torch.cuda.is_available(),
            stream=sys.stdout,
            machines=machines,
            threads=int(cpus) if cpus.isdigit() else None,
        )
    except TrainingInterrupted as err:
        log.warning("%s", err)
        return 0
    except (LaunchError, RuntimeError, ValueError) as err:
        log.error("%s", err)
        return 1
    return 0


USAGE = (
    "usage: python -m dkd.train.launch <job.json>  (one rank, run by accelerate launch)\n"
    "       python -m dkd.train.launch --node --processes N <job.json>  (one node's N ranks, run by srun)"
)


def main(argv: list[str] | None = None) -> int:
    """``python -m dkd.train.launch <job.json>``: one rank's training (see ``run_distillation``);
    ``--node --processes N <job.json>``: one node task of a multi-node run."""
    from torch.distributed.elastic.multiprocessing.errors import record

    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and not args[0].startswith("-"):
        return record(_rank_main)(args[0])
    if len(args) == 4 and args[:2] == ["--node", "--processes"] and args[2].isdigit() and int(args[2]) > 0:
        return _node_main(args[3], int(args[2]))
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
