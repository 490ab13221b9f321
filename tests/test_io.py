"""dkd.io.rule_log: what a rule's log and its history keep across attempts and failures."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import pytest

from dkd.io import rule_log


def test_history_keeps_every_attempt_when_snakemake_deletes_the_log(tmp_path):
    log, history = tmp_path / "distill.log", tmp_path / "train" / "distill.log"
    with pytest.raises(RuntimeError):
        with rule_log(log, history=history):
            logging.getLogger("dkd.test").info("attempt 1 starts")
            print("a progress bar", file=sys.stderr)
            raise RuntimeError("killed in attempt 1")
    first = log.read_text()
    assert "attempt 1 starts" in first and "a progress bar" in first
    assert "the job failed" in first and "RuntimeError: killed in attempt 1" in first  # the traceback
    log.unlink()  # Snakemake removes a job's log before the next attempt
    with rule_log(log, history=history):
        logging.getLogger("dkd.test").info("attempt 2 resumes")
    assert "attempt 1" not in log.read_text() and "attempt 2 resumes" in log.read_text()
    kept = history.read_text()
    assert kept.index("attempt 1 starts") < kept.index("killed in attempt 1") < kept.index("attempt 2 resumes")


def test_without_history_only_the_log_is_written(tmp_path):
    with rule_log(tmp_path / "rule.log"):
        logging.getLogger("dkd.test").info("done")
    assert [p.name for p in tmp_path.iterdir()] == ["rule.log"]
    assert "dkd.test done" in (tmp_path / "rule.log").read_text()


HOLD = """  # python -c HOLD <lock>: holds the lock until killed
import sys, time
from dkd.io import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_exclusive_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    """The lock of another process (not a thread: flock locks belong to open files) is refused with
    its holder named; SIGKILL of that process frees it, nothing to clean up."""
    from dkd.io import LockedError, exclusive

    lock = tmp_path / "train" / "lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"{lock}: host .*, pid {holder.pid} holds the lock of the run"):
            with exclusive(lock, "the run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exclusive(lock, "the run"):
        assert f"pid {os.getpid()}" in lock.read_text()
    assert lock.read_text() == ""  # released: no holder named
