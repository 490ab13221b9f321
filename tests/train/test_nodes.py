"""One run on several machines (dkd.train.nodes), on the CPU: the job process runs ``srun`` of one
node task per machine; each task starts its ranks with ``accelerate launch --num_machines``.

Here ``srun`` and ``scontrol`` are stand-ins on PATH (bash): ``srun --nodes=N cmd`` starts N
copies of ``cmd`` on this machine with the environment SLURM gives each task (``SLURM_NODEID``,
``SLURM_STEP_NUM_NODES``, ``SLURM_STEP_NODELIST``, ``SLURM_JOB_ID``), forwards SIGTERM/SIGUSR1
to them as srun does, and exits with the largest exit code. Everything else is real: the two
node tasks rendezvous over TCP on 127.0.0.1 and train with gloo. Reference: test_ddp's 2-rank run
(bit-identical), as for two processes on one machine.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time

import pytest

from dkd.train.checkpoint import list_checkpoints
from dkd.train.launch import LaunchError, launch_command, main, run_distillation
from dkd.train.loop import TrainingInterrupted
from dkd.train.nodes import Machines, machines_from_slurm, rendezvous_port, srun_command
from tests.train import test_ddp as ddp
from tests.train.test_launch import _job, setup, two_rank_reference  # noqa: F401  (setup: the fixture)

FAKE_SRUN = r"""#!/usr/bin/env bash
echo "srun $*" >> "$FAKE_SLURM_CALLS"
nodes=1
while [[ $1 == --* ]]; do
  case $1 in --nodes=*) nodes=${1#--nodes=};; --cpus-per-task=*) export SLURM_CPUS_PER_TASK=${1#--cpus-per-task=};; esac
  shift
done
list=$(for ((i=0; i<nodes; i++)); do printf '127.0.0.1,'; done); list=${list%,}
pids=()
for ((i=0; i<nodes; i++)); do
  SLURM_NODEID=$i SLURM_STEP_NUM_NODES=$nodes SLURM_STEP_NODELIST=$list SLURM_JOB_ID=$FAKE_SLURM_JOB_ID "$@" &
  pids+=($!)
done
killtree() { local child; for child in $(pgrep -P "$1"); do killtree "$child"; done; kill -KILL "$1" 2>/dev/null; }
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' USR1
code=0; left=$nodes
while (( left > 0 )); do
  sleep 0.2
  running=" $(jobs -rp | tr '\n' ' ') "
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [[ -z $pid || $running == *" $pid "* ]] && continue
    wait "$pid"; c=$?; pids[$i]=""; left=$((left - 1))
    (( c > code )) && code=$c
    if (( c != 0 )); then  # --kill-on-bad-exit=1: the other tasks and every process they started, as SLURM does
      for other in "${pids[@]}"; do [[ -n $other ]] && killtree "$other"; done
    fi
  done
done
exit $code
"""
FAKE_SCONTROL = r"""#!/usr/bin/env bash
case "$1 $2" in
  "show hostnames") echo "$3" | tr , "\n";;
  "show node") [[ $3 == gpu07 ]] && echo "NodeName=gpu07 Arch=x86_64 NodeAddr=10.1.2.7 NodeHostName=gpu07" \
               || echo "NodeName=$3 Arch=x86_64 NodeAddr=$3 NodeHostName=$3";;
esac
"""


def _free_job_id() -> str:
    """A job id whose rendezvous port is free now."""
    for port in range(20000 + os.getpid() % 1000, 40000, 97):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(port - 20000)
    raise RuntimeError("no free port")


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("FAKE_SLURM_JOB_ID", _free_job_id())
    return tmp_path / "calls.txt"


def test_machines_and_their_accelerate_arguments():
    assert Machines().accelerate_args(4) == ["--num_processes", "4", "--num_machines", "1", "--main_process_port", "0"]
    assert Machines(count=2, rank=1, address="gpu07", port=21234).accelerate_args(4) == [
        "--num_processes",
        "8",
        "--num_machines",
        "2",
        "--machine_rank",
        "1",
        "--main_process_ip",
        "gpu07",
        "--main_process_port",
        "21234",
    ]
    for kwargs, message in (
        ({"count": 0}, "count >= 1"),
        ({"count": 2, "rank": 2, "address": "a", "port": 1}, "rank < count"),
        ({"count": 2}, "address and a port"),
        ({"rank": True}, "rank must be a whole number"),
    ):
        with pytest.raises(ValueError, match=message):
            Machines(**kwargs)
    assert [rendezvous_port(j) for j in ("7", "20007", "123456")] == [20007, 20007, 23456]
    with pytest.raises(ValueError, match="job id must be a number"):
        rendezvous_port("12_3")
    command = launch_command(
        "job.json",
        4,
        mixed_precision="bf16",
        threads=2,
        machines=Machines(count=2, rank=1, address="gpu07", port=21234),
    )
    assert command[command.index("--machine_rank") + 1] == "1" and command[-2:] == ["dkd.train.launch", "job.json"]


def test_srun_command_and_the_node_task_environment(fake_slurm):
    command = srun_command("/runs/a/job.json", processes=8, nodes=2, cpus=32)
    assert command[:8] == [
        "srun",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=32",
        "--gres=gpu:8",
        "--kill-on-bad-exit=1",
        "--unbuffered",
    ]
    assert "--gres=gpu:8" not in srun_command("job.json", processes=8, nodes=2, cpus=32, gpus=False)
    assert command[-6:] == ["-m", "dkd.train.launch", "--node", "--processes", "8", "/runs/a/job.json"]
    env = {
        "SLURM_NODEID": "1",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_NODELIST": "gpu07,gpu09",
        "SLURM_JOB_ID": "4242",
    }
    assert machines_from_slurm(env) == Machines(count=2, rank=1, address="10.1.2.7", port=24242)  # gpu07's NodeAddr
    with pytest.raises(
        RuntimeError, match="must run under srun inside a SLURM job; SLURM_NODEID, SLURM_JOB_ID not set"
    ):
        machines_from_slurm({k: v for k, v in env.items() if k not in ("SLURM_NODEID", "SLURM_JOB_ID")})
    with pytest.raises(RuntimeError, match="has 3 nodes but its node list 'gpu07,gpu09' names 2"):
        machines_from_slurm({**env, "SLURM_STEP_NUM_NODES": "3"})
    assert main(["--node", "--processes", "0", "job.json"]) == 2 and main([]) == 2


def test_two_machines_match_the_two_rank_reference(setup, fake_slurm, tmp_path, monkeypatch):
    job = _job(setup, "two-machines")
    with open(tmp_path / "job.log", "a") as log:
        done = run_distillation(job, processes=1, nodes=2, cpus=1, log_stream=log)
    text = (tmp_path / "job.log").read_text()
    assert "node 0 of 2 (rendezvous 127.0.0.1:" in text and "node 1 of 2" in text and "rank 1 " in text
    assert fake_slurm.read_text().startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1")
    (attempt,) = done.attempts
    assert attempt["processes"] == 2 and attempt["steps"] == [0, 4]
    expected, got = two_rank_reference(setup[1], tmp_path / "reference", monkeypatch), ddp._weights(done.result)
    assert expected.keys() == got.keys() and len(got) > 0
    for name in got:
        assert (got[name] == expected[name]).all(), name


def test_sigterm_reaches_every_node_and_the_rerun_resumes(setup, fake_slurm, tmp_path):
    job = _job(setup, "two-machines-signalled")
    log = job.path.parent / "log.csv"

    def signal_after_step_one():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if log.is_file() and len(log.read_text().splitlines()) >= 2:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)

    previous = signal.signal(signal.SIGTERM, lambda *args: None)
    try:
        watcher = threading.Thread(target=signal_after_step_one, daemon=True)
        watcher.start()
        with pytest.raises(TrainingInterrupted, match=r"forwarded to the 2 training processes\) at step [123]; "):
            run_distillation(job, processes=1, nodes=2, cpus=1, log_stream=open(tmp_path / "job.log", "a"))
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    (stopped,) = [int(p.name.split("-")[1]) for p in list_checkpoints(job.path.parent / "checkpoints")][-1:]
    done = run_distillation(job, processes=1, nodes=2, cpus=1, log_stream=open(tmp_path / "job.log", "a"))
    first, second = done.attempts
    assert (first["steps"], second["steps"]) == ([0, stopped], [stopped, 4])


def test_a_failing_node_is_one_clear_error(setup, fake_slurm, tmp_path, monkeypatch):
    (tmp_path / "sitecustomize.py").write_text(  # the second machine's rank dies as its interpreter starts
        "import os\nif os.environ.get('RANK') == '1':\n    os._exit(3)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    with pytest.raises(
        LaunchError, match=r"distillation on 2 processes failed: rank 1 exited with code 3 \(srun exit code \d+\)"
    ):
        run_distillation(
            _job(setup, "two-machines-crashed"),
            processes=1,
            nodes=2,
            cpus=1,
            log_stream=open(tmp_path / "job.log", "a"),
        )
