"""The workflow on a real SLURM cluster (one node, see conftest.py) through the shipped `slurm` profile,
and the faults a cluster inflicts: a killed job, a preempted (requeued) job, a job stopped by its
time limit, Snakemake itself stopped. Every test asserts on files and logs (checkpoints, the rule's
log, SLURM's job records), never on timing; waits only bound how long a step may take."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dkd.train.checkpoint import PREFIX, list_checkpoints
from tests.cluster.conftest import ROOT, stop, wait_for
from tests.conftest import toy_test_config

RUN = "lorad-s4-f2-linear-zero"
# Steps of ~0.3 s on one CPU: a checkpoint every few seconds, a run of half a minute.
SETTINGS = dict(batch_size=4, per_device_batch=2, max_steps=100, checkpoint_every=10, log_every=1, seed=0)
START = re.compile(r"no checkpoint in \S+: training starts at step 0|resuming from \S+ at step (\d+)")


def distill_config(folder: Path, **settings) -> Path:
    """config/tiny.yaml reduced to one tiny-SD distillation run with ``settings``, results in folder."""
    config = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    config["results"] = str(folder / "results")
    config["backbones"] = {"tiny-sd": config["backbones"]["tiny-sd"]}
    config["distill"]["settings"] = {**config["distill"]["settings"], **settings}
    config["distill"]["runs"] = {"tiny-sd": [RUN]}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_dir(folder: Path) -> Path:
    return folder / "results" / "tiny-sd" / RUN


def target(folder: Path) -> str:
    return str(run_dir(folder) / "pipeline" / "model_index.json")


def steps(checkpoints: Path) -> list[int]:
    return [int(path.name[len(PREFIX) :]) for path in list_checkpoints(checkpoints)]


def logged_steps(train: Path) -> int:
    """Rows of the training log (one per step: log_every=1)."""
    log = train / "log.csv"
    return max(len(log.read_text().splitlines()) - 1, 0) if log.exists() else 0


def attempt_starts(folder: Path) -> list[int]:
    """The step each attempt of the run started at, from the rule's log (appended by every attempt)."""
    path = run_dir(folder) / "train" / "distill.log"  # the rule's log keeps only the last attempt
    log = path.read_text() if path.exists() else ""
    return [int(step or 0) for step in START.findall(log)]


def exported(folder: Path) -> dict:
    """Every tensor the export wrote (adapter and merged pipeline), by file and name."""
    out = run_dir(folder)
    return {
        (str(path.relative_to(out)), name): tensor
        for path in sorted([*out.glob("adapter/**/*.safetensors"), *out.glob("pipeline/**/*.safetensors")])
        for name, tensor in load_file(path).items()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The fault tests' run made locally without interruption (one thread, as the SLURM job's one CPU);
    its teacher folder is copied into each test's results so that only the distillation runs there."""
    folder = tmp_path_factory.mktemp("reference")
    config = distill_config(folder, **SETTINGS)
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", target(folder), "--cores", "1", "--configfile", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert attempt_starts(folder) == [0]
    return folder


def prepare(folder: Path, reference: Path, **settings) -> Path:
    config = distill_config(folder, **settings)
    shutil.copytree(reference / "results" / "backbones", folder / "results" / "backbones")
    return config


def test_a_killed_then_preempted_then_cancelled_distillation_ends_with_the_uninterrupted_weights(
    cluster, reference, tmp_path
):
    """Attempt 1 is SIGKILLed (its Python process) before its first checkpoint: Snakemake resubmits it (retries) and it
    starts over. Attempt 2 is preempted (`scontrol requeue`) after a checkpoint: SLURM restarts the
    same job, which resumes. Then it is cancelled (`scancel`): Snakemake resubmits and attempt 3
    resumes from the newest checkpoint. The exported student equals the uninterrupted run's, bit for bit."""
    config = prepare(tmp_path, reference, **SETTINGS)
    train, log = run_dir(tmp_path) / "train", tmp_path / "snakemake.log"
    checkpoints = train / "checkpoints"
    snakemake = cluster.start_snakemake(target(tmp_path), "--configfile", str(config), log=log)
    running = dict(process=snakemake, log=log)
    try:

        def distill_job(exclude=()):
            jobs = [j for j in cluster.jobs("distill") if j.state == "RUNNING" and j.id not in exclude]
            return jobs[-1] if jobs else None

        first = wait_for(
            lambda: logged_steps(train) >= 1 and distill_job(),
            timeout=240,
            what="the distillation's first step",
            **running,
        )
        assert cluster.kill_processes(first.id, "distill.py"), "the distillation's process was not found"
        assert not steps(checkpoints), "the first checkpoint came before the kill; the test cannot decide"

        second = wait_for(
            lambda: distill_job(exclude={first.id}) if steps(checkpoints) else None,
            timeout=240,
            what="a checkpoint of the resubmitted job",
            **running,
        )
        cluster.run("scontrol", "requeue", second.id)
        resumed_at = wait_for(
            lambda: len(starts := attempt_starts(tmp_path)) == 3 and starts[2],
            timeout=240,
            what="the requeued job to resume",
            **running,
        )
        wait_for(
            lambda: steps(checkpoints)[-1] > resumed_at and distill_job(),
            timeout=240,
            what="a checkpoint of the requeued job",
            **running,
        )
        cluster.run("scancel", second.id)
        assert snakemake.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        stop(snakemake)

    starts = attempt_starts(tmp_path)
    assert starts[:2] == [0, 0] and len(starts) == 4 and 0 < starts[2] < starts[3] < SETTINGS["max_steps"], starts
    jobs = cluster.jobs("distill")[-3:]
    assert [job.id for job in jobs][:2] == [first.id, second.id] and cluster.restarts(second.id) == 1
    ours, theirs = exported(tmp_path), exported(reference)
    assert ours.keys() == theirs.keys() and ours
    assert all(ours[key].equal(theirs[key]) for key in ours)


def test_a_distillation_stopped_by_its_time_limit_resumes_in_the_next_job(cluster, reference, tmp_path):
    """With one minute per job (DKD_SLURM_DISTILL_RUNTIME=1) and far more training than a minute holds,
    SLURM stops the first job at its time limit (SIGTERM): the trainer checkpoints the step it reached
    (there is no periodic checkpoint), the job ends as TIMEOUT, Snakemake submits the run again and the
    new job resumes from that step. The test stops there: that a resumed run ends with the
    uninterrupted run's weights is the kill/requeue test's; nothing here depends on the machine's speed."""
    config = prepare(tmp_path, reference, **{**SETTINGS, "max_steps": 100_000, "checkpoint_every": 100_000})
    train, log = run_dir(tmp_path) / "train", tmp_path / "snakemake.log"
    snakemake = cluster.start_snakemake(
        target(tmp_path), "--configfile", str(config), log=log, DKD_SLURM_DISTILL_RUNTIME="1"
    )
    running = dict(process=snakemake, log=log)
    try:
        first = wait_for(
            lambda: next((job for job in cluster.jobs("distill") if job.state == "TIMEOUT"), None),
            timeout=300,
            what="the first job to reach its time limit",
            **running,
        )
        (stopped,) = steps(train / "checkpoints")  # written on SIGTERM
        wait_for(
            lambda: len(attempt_starts(tmp_path)) == 2 and logged_steps(train) > stopped,
            timeout=240,
            what="the job submitted again to resume and train",
            **running,
        )
        assert len([job for job in cluster.jobs("distill") if int(job.id) > int(first.id)]) == 1  # one resubmission
    finally:
        stop(snakemake, signal.SIGKILL)  # SIGTERM would wait for the endless job
        cluster.cancel_all()
    wait_for(
        lambda: not [j for j in cluster.jobs() if j.state in ("RUNNING", "PENDING", "COMPLETING")],
        timeout=120,
        what="Snakemake's jobs to be cancelled",
    )
    assert stopped > 0 and attempt_starts(tmp_path) == [0, stopped]


def test_a_distillation_on_two_nodes_equals_two_local_processes(cluster, reference, tmp_path):
    """DKD_SLURM_DISTILL_NODES=2 in the partition `multi`: one SLURM job holding two nodes (one task
    each; no `srun -n1` around the rule, `mpi` resource), whose process starts one srun node task per
    node, each with one rank; the rendezvous is on the first node's NodeAddr. The trained weights
    equal a local run of the same job on two processes (one machine), bit for bit."""
    from dkd.train.job import DistillJob
    from dkd.train.launch import run_distillation

    config = prepare(tmp_path, reference, **{**SETTINGS, "max_steps": 6, "checkpoint_every": 3})
    done = cluster.snakemake(
        target(tmp_path),
        "--configfile",
        str(config),
        timeout=480,
        DKD_SLURM_DISTILL_NODES="2",
        DKD_SLURM_GPU_PARTITION="multi",
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (job,) = cluster.jobs("distill")[-1:]
    record = dict(f.split("=", 1) for f in cluster.run("scontrol", "-o", "show", "job", job.id).split() if "=" in f)
    assert (record["NumNodes"], record["NumTasks"], record["Partition"]) == ("2", "2", "multi"), record
    log = (run_dir(tmp_path) / "train" / "distill.log").read_text()
    assert "1 process(es) x 2 node(s)" in log and "node 0 of 2" in log and "node 1 of 2" in log
    train = json.loads((run_dir(tmp_path) / "train.json").read_text())
    assert train["values"]["processes"] == 2 and train["values"]["steps"] == 6

    slurm_job = DistillJob.read(run_dir(tmp_path) / "train" / "job.json")
    on_slurm = run_distillation(slurm_job, processes=1)  # finished: loaded, not trained again
    local = run_distillation(DistillJob(**{**slurm_job.__dict__, "train_dir": str(tmp_path / "local")}), processes=2)
    for role in ("student", "fake"):
        got = {n: p for n, p in getattr(on_slurm.result, role).named_parameters() if p.requires_grad}
        expected = {n: p for n, p in getattr(local.result, role).named_parameters() if p.requires_grad}
        assert got.keys() == expected.keys() and got
        assert all(torch.equal(got[n], expected[n]) for n in got), role


# What the SLURM toy test takes from the local run: the toy's data, teacher and evaluator, the reference
# statistics and both teachers' rows, so that DKD's own chain (distillation, images, metrics, table) runs on SLURM.
FROM_LOCAL_RUN = ("data", "backbones", "evaluator", "reference-stats", "toy/teacher", "toy/teacher-1step")


def test_toy_results_on_slurm_equal_the_local_run_after_snakemake_is_stopped(cluster, toy_run, tmp_path):
    """`snakemake --profile slurm table1` of the shortened toy benchmark, stopped (SIGTERM, as when
    its terminal closes) once the distillation is done and other jobs run: Snakemake cancels its
    jobs and leaves no output that looks complete; run again, it submits only what was not finished,
    and Table 1 is the local run's, number for number. The local run's shared outputs are copied in
    first (FROM_LOCAL_RUN, times kept: Snakemake sees them up to date)."""
    from dkd.report import build_table, read_results, render_table, table_specs

    local, toy_config = toy_run
    results = tmp_path / "results"
    args, _ = toy_test_config(results)
    for part in FROM_LOCAL_RUN:
        shutil.copytree(local / part, results / part)
    pipeline = results / "toy" / "lorad-s8-f4-linear-zero" / "pipeline" / "model_index.json"
    log = tmp_path / "first.log"
    snakemake = cluster.start_snakemake("table1", *args, log=log)
    try:
        wait_for(
            lambda: pipeline.exists() and any(j.state == "RUNNING" and j.rule != "distill" for j in cluster.jobs()),
            timeout=400,
            what="the distillation to finish and an evaluation job to run",
            process=snakemake,
            log=log,
        )
        assert stop(snakemake, signal.SIGTERM) != 0
    finally:
        stop(snakemake, signal.SIGKILL)
    wait_for(
        lambda: not [j for j in cluster.jobs() if j.state in ("RUNNING", "PENDING", "COMPLETING")],
        timeout=120,
        what="Snakemake's jobs to be cancelled",
    )

    plan = cluster.snakemake("table1", *args, "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert not re.search(r"^rule distill:", plan.stdout, flags=re.M), "the finished distillation would rerun"
    again = cluster.snakemake("table1", *args, timeout=600)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "rule distill:" not in again.stdout + again.stderr

    spec = next(s for s in table_specs({"table1": toy_config["report"]["tables"]["table1"]}))
    files = sorted(
        str(path)
        for pattern in (
            "toy/*/toy-eval/fid.json",
            "toy/*/toy-eval/pr.json",
            "toy/*/toy-eval/text_image.json",
            "toy/*/params.json",
            "toy/*/train.json",
        )
        for path in results.glob(pattern)
    )
    ours = render_table(build_table(spec, read_results(files), None)).replace(str(results), "RESULTS")
    theirs = (local / "tables" / "table1.md").read_text().replace(str(local), "RESULTS")
    assert ours.strip() == theirs.strip()
    assert (
        json.loads((results / "toy" / "lorad-s8-f4-linear-zero" / "toy-eval" / "fid.json").read_text())["values"]
        == json.loads((local / "toy" / "lorad-s8-f4-linear-zero" / "toy-eval" / "fid.json").read_text())["values"]
    )
