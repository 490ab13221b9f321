"""One run on several processes in one job (dkd.train.launch), on the CPU: 2 ranks started by
``accelerate launch`` as real subprocesses (gloo), exactly as on GPUs but for ACCELERATE_USE_CPU.

The reference is test_ddp's: a 2-process run equals, bit for bit, one process in which micro-batch
``k`` draws from rank ``k``'s generator (see test_ddp's docstring); no tolerance.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch

from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.train import loop as loop_module
from dkd.train.checkpoint import SECONDS_PER_DAY, list_checkpoints
from dkd.train.job import DistillJob
from dkd.train.launch import LaunchError, run_distillation
from dkd.train.loop import TrainingInterrupted
from tests.train import test_ddp as ddp


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: 1 thread per process (the ranks get as many: threads // 2, >= 1)
    root = tmp_path_factory.mktemp("launch")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(ddp.PROMPTS) + "\n")
    yield root, str(save_tiny_backbone("sd", root / "teacher", seed=5)), prompts
    torch.set_num_threads(threads)


def _job(setup, name: str, **overrides) -> DistillJob:
    root, teacher, prompts = setup
    return DistillJob(
        config=ddp._config(**overrides),
        source=teacher,
        dtype="float32",
        prompts=str(prompts),
        train_dir=str(root / name),
    )


def _snapshot(folder) -> dict:
    """Modification times of the run's files (its lock aside: each attempt holds it, finished run or not)."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.name != "lock"}


@pytest.fixture(scope="module")
def launched(setup):
    """An uninterrupted 2-process run, its output streamed into a log file."""
    job = _job(setup, "launched")
    with open(setup[0] / "launched.log", "a") as log:
        done = run_distillation(job, processes=2, log_stream=log)
    return job, done, (setup[0] / "launched.log").read_text()


def test_job_round_trips_and_a_malformed_job_is_one_clear_error(setup, tmp_path):
    curve = {
        "evaluator": {"kind": "toy", "classifier": "c"},
        "prompts": "p.txt",
        "count": 4,
        "every": 2,
        "seed": 0,
        "stats": "s.npz",
        "features": "f.npy",
    }
    job = DistillJob(**{**_job(setup, "x").__dict__, "train_dir": str(tmp_path), "curve": curve})
    path = job.write()
    assert path == tmp_path / "job.json" and not list(tmp_path.glob(".*.tmp"))
    assert DistillJob.read(path) == job
    good = json.loads(path.read_text())
    bad = {
        "not json": "{",
        "unknown key": json.dumps({**good, "extra": 1}),
        "missing key": json.dumps({k: v for k, v in good.items() if k != "source"}),
        "bad config": json.dumps({**good, "config": {**good["config"], "batch_size": 3}}),
        "bad dtype": json.dumps({**good, "dtype": "float64"}),
        "bad curve": json.dumps({**good, "curve": {"every": 2}}),
    }
    expected = {
        "not json": "not a readable distillation job",
        "unknown key": "keys",
        "missing key": "keys",
        "bad config": "batch_size 3 must be a multiple",
        "bad dtype": "dtype must be one of",
        "bad curve": "curve must be None or a mapping",
    }
    for name, text in bad.items():
        broken = tmp_path / f"{name}.json"
        broken.write_text(text)
        with pytest.raises(ValueError, match=expected[name]) as err:
            DistillJob.read(broken)
        assert str(err.value).startswith(f"{broken}: "), name
        assert broken.read_text() == text  # nothing lost


def two_rank_reference(teacher_folder: str, folder, monkeypatch) -> dict[str, torch.Tensor]:
    """The trained weights of the 2-rank run, computed in this process (test_ddp's reference)."""
    teacher = load_teacher("tiny-sd", teacher_folder)
    reference = ddp._OneProcessAsTwoRanks(ddp._config(checkpoint_every=100), teacher, ddp.PROMPTS, folder)
    original = loop_module.fake_loss

    def fake_loss(teacher, fake, x0, embeds, uncond, objective, generator):  # the fake update's micro-batch k: rank k's
        reference.current, reference.faked = reference.faked % ddp.WORLD, reference.faked + 1
        return original(teacher, fake, x0, embeds, uncond, objective, reference.generator)

    monkeypatch.setattr(loop_module, "fake_loss", fake_loss)
    weights = ddp._weights(reference.run(progress=False))
    monkeypatch.setattr(loop_module, "fake_loss", original)
    return weights


def test_two_launched_processes_match_the_in_process_two_rank_reference(launched, setup, tmp_path, monkeypatch):
    job, done, log = launched
    expected = two_rank_reference(setup[1], tmp_path, monkeypatch)
    got = ddp._weights(done.result)
    assert expected.keys() == got.keys() and len(got) > 0
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    assert done.result.steps == 4 and DistillJob.read(job.path) == job
    assert "rank 0 " in log and "rank 1 " in log and "distill: 100%" in log  # the ranks' output, streamed


def test_launched_run_records_its_cost_and_a_finished_run_is_only_loaded(launched, setup):
    job, done, _ = launched
    (attempt,) = done.attempts
    assert attempt["device"] == "cpu" and attempt["processes"] == 2 and attempt["steps"] == [0, 4]
    assert 0 < attempt["seconds"] < 600
    # by hand: wall seconds x 2 processes / 86400 s per day; hours = seconds / 3600
    assert done.cost == {
        "gpu_days": attempt["seconds"] * 2 / 86400,
        "train_hours": attempt["seconds"] / 3600,
        "processes": 2,
        "steps": 4,
    }
    before = _snapshot(setup[0] / "launched")
    again = run_distillation(job, processes=2)  # finished: loaded by this process, no launch, nothing written
    assert _snapshot(setup[0] / "launched") == before
    reloaded, trained = ddp._weights(again.result), ddp._weights(done.result)
    assert reloaded.keys() == trained.keys() and all(torch.equal(reloaded[n], trained[n]) for n in trained)
    assert again.cost == done.cost


def test_sigterm_to_the_parent_checkpoints_stops_and_the_rerun_is_bit_identical(launched, setup):
    job = _job(setup, "signalled")
    log = job.path.parent / "log.csv"

    def signal_after_step_one():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log.is_file() and len(log.read_text().splitlines()) >= 2:  # header and step 1
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)

    previous = signal.signal(signal.SIGTERM, lambda *args: None)  # a late signal must not end pytest
    try:
        watcher = threading.Thread(target=signal_after_step_one, daemon=True)
        watcher.start()
        with pytest.raises(
            TrainingInterrupted,
            match=rf"signal {int(signal.SIGTERM)} \(forwarded to the 2 "
            r"training processes\) at step [123]; checkpoint .*step-0+[123]; "
            r"the next attempt resumes from it",
        ):
            run_distillation(job, processes=2)
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    (stopped,) = [int(p.name.split("-")[1]) for p in list_checkpoints(job.path.parent / "checkpoints")][-1:]
    assert 1 <= stopped < 4
    done = run_distillation(job, processes=2)  # the next attempt: 2 new ranks resume
    for name, value in ddp._weights(launched[1].result).items():
        assert torch.equal(ddp._weights(done.result)[name], value), name
    first, second = done.attempts
    assert (first["steps"], second["steps"]) == ([0, stopped], [stopped, 4])
    seconds = first["seconds"] + second["seconds"]
    assert done.cost["gpu_days"] == pytest.approx(seconds * 2 / SECONDS_PER_DAY, rel=1e-12)


def test_a_crashing_rank_is_one_clear_error_naming_its_exit_code_and_the_log(setup, tmp_path, monkeypatch):
    (tmp_path / "sitecustomize.py").write_text(  # rank 1 dies as its interpreter starts
        "import os\nif os.environ.get('RANK') == '1':\n    os._exit(3)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    with open(tmp_path / "job.log", "a") as log:
        with pytest.raises(
            LaunchError,
            match=r"rank 1 exited with code 3 \(accelerate launch exit code 1\); "
            rf"the ranks' output and traceback are in {tmp_path / 'job.log'}; "
            r"latest checkpoint: none\.",
        ):
            run_distillation(_job(setup, "crashed"), processes=2, log_stream=log)
    assert "exitcode" in (tmp_path / "job.log").read_text()  # torchrun's summary, streamed into the log


def test_a_run_another_process_trains_is_refused_before_anything_is_written(setup):
    """Two attempts of one run at once (a SLURM job left running by a killed Snakemake, and the
    same run submitted again) would write the same checkpoints: the second is refused at once."""
    import subprocess
    import sys

    from dkd.io import LockedError
    from tests.test_io import HOLD

    job = _job(setup, "locked")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, os.path.join(job.train_dir, "lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {holder.pid} holds the lock of the run in "):
            run_distillation(job, processes=1)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in setup[0].joinpath("locked").iterdir()) == ["lock"]
