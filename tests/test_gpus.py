"""dkd.gpus: the device count without CUDA, and exclusive GPU claims between processes (a fake
GPU count through $DKD_GPU_COUNT, lock files in a temporary folder; no GPU needed)."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from dkd.gpus import claim_gpu, count_nvidia_smi_gpus, lock_path, visible_gpu_count
from dkd.io import rule_log

# `nvidia-smi -L` of a machine with two GPUs, the second split into two MIG devices.
LISTING = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1b2c3d4e-0000-0000-0000-000000000000)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-5f6a7b8c-0000-0000-0000-000000000000)
  MIG 3g.20gb     Device  0: (UUID: MIG-11111111-0000-0000-0000-000000000000)
  MIG 3g.20gb     Device  1: (UUID: MIG-22222222-0000-0000-0000-000000000000)
"""

# A process that claims GPUs, prints CUDA_VISIBLE_DEVICES and holds them until a line arrives.
HOLDER = textwrap.dedent("""
    import os, sys
    from dkd.gpus import claim_gpu
    count, timeout = int(sys.argv[1]), (None if sys.argv[2] == "none" else float(sys.argv[2]))
    with claim_gpu(count, timeout=timeout, poll=0.05):
        print(os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
        sys.stdin.readline()
""")


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake machine with 2 GPUs: the count from $DKD_GPU_COUNT, locks in tmp_path."""
    monkeypatch.setenv("DKD_GPU_COUNT", "2")
    monkeypatch.setenv("DKD_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    return tmp_path / "locks"


def _holder(count=1, timeout="none"):
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(count), str(timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _release(process):
    process.stdin.write("\n")
    process.stdin.flush()
    assert process.wait(timeout=30) == 0, process.stderr.read()


def _fake_nvidia_smi(folder, script):
    folder.mkdir()
    path = folder / "nvidia-smi"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return folder


def test_counts_gpu_lines_of_nvidia_smi_not_mig_devices():
    assert count_nvidia_smi_gpus(LISTING) == 2
    assert count_nvidia_smi_gpus("") == 0


def test_visible_count_asks_nvidia_smi_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("DKD_GPU_COUNT", raising=False)
    (tmp_path / "listing.txt").write_text(LISTING)
    cat = shutil.which("cat")
    monkeypatch.setenv("PATH", str(_fake_nvidia_smi(tmp_path / "smi", f"{cat} {tmp_path / 'listing.txt'}")))
    assert visible_gpu_count() == 2
    monkeypatch.setenv("DKD_GPU_COUNT", "5")
    assert visible_gpu_count() == 5
    monkeypatch.setenv("DKD_GPU_COUNT", "two")
    with pytest.raises(ValueError, match="DKD_GPU_COUNT='two'"):
        visible_gpu_count()


def test_no_or_failing_nvidia_smi_counts_no_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("DKD_GPU_COUNT", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    assert visible_gpu_count() == 0
    monkeypatch.setenv("PATH", str(_fake_nvidia_smi(tmp_path / "smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9")))
    assert visible_gpu_count() == 0


def test_two_processes_get_different_gpus_and_a_third_fails_clearly(machine):
    first, second = _holder(), _holder()
    try:
        devices = {first.stdout.readline().strip(), second.stdout.readline().strip()}
        assert devices == {"0", "1"}
        third = subprocess.run([sys.executable, "-c", HOLDER, "1", "0.3"], capture_output=True, text=True, timeout=60)
        assert third.returncode != 0
        assert "GpuBusyError" in third.stderr and "did not become free within 0.3 s" in third.stderr
        for holder in (first, second):  # the message names each lock file and the pid holding it
            assert f"(pid {holder.pid})" in third.stderr
        assert str(lock_path(0, machine)) in third.stderr
    finally:
        for holder in (first, second):
            _release(holder)


def test_a_waiting_claim_gets_the_gpu_that_is_released(machine):
    first, second = _holder(), _holder()
    waiting = None
    try:
        assert {first.stdout.readline().strip(), second.stdout.readline().strip()} == {"0", "1"}
        waiting = _holder()
        ready, _, _ = select.select([waiting.stdout], [], [], 1.0)
        assert not ready and waiting.poll() is None  # still waiting after 1 s
        released = "0" if lock_path(0, machine).read_text().strip() == str(first.pid) else "1"
        _release(first)
        assert waiting.stdout.readline().strip() == released
    finally:
        for holder in (second, waiting):
            if holder is not None:
                _release(holder)


def test_a_killed_holder_frees_its_gpu(machine):
    holder = _holder(count=2)
    assert holder.stdout.readline().strip() == "0,1"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with claim_gpu(2, timeout=5) as devices:
        assert devices == (0, 1)


def test_several_gpus_are_the_free_ones(machine, monkeypatch):
    monkeypatch.setenv("DKD_GPU_COUNT", "3")
    holder = _holder()
    try:
        assert holder.stdout.readline().strip() == "0"
        with claim_gpu(2, timeout=5) as devices:
            assert devices == (1, 2)
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2"
            assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    finally:
        _release(holder)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and "CUDA_DEVICE_ORDER" not in os.environ


def test_a_device_set_by_the_scheduler_is_kept(machine, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with claim_gpu(1, timeout=0) as devices:
        assert devices == ()
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not machine.exists()  # no lock taken


def test_no_gpu_asked_or_none_on_the_machine_changes_nothing(machine, monkeypatch):
    with claim_gpu(0) as devices:
        assert devices == () and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("DKD_GPU_COUNT", "0")
    with claim_gpu(1) as devices:
        assert devices == () and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not machine.exists()


def test_bad_requests_fail_with_one_message(machine):
    with pytest.raises(ValueError, match="asks for 3 GPUs but this machine has 2"):
        with claim_gpu(3):
            pass
    with pytest.raises(ValueError, match="count must be a whole number"):
        with claim_gpu(-1):
            pass


def test_rule_log_claims_the_jobs_gpus(machine, tmp_path):
    log = tmp_path / "rule.log"
    with rule_log(log, 1, gpus=1):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        other = subprocess.run(
            [sys.executable, "-c", HOLDER, "2", "0.2"], capture_output=True, text=True, timeout=60, env=env
        )
        assert other.returncode != 0 and f"(pid {os.getpid()})" in other.stderr  # GPU 0 is this job's
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "GPUs: claimed (0,)" in log.read_text()
    with rule_log(log, 1):  # gpus=0 (the default): nothing claimed
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
