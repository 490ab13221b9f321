"""The SLURM profile (slurm/config.yaml) and the workflow profile (profiles/default/config.yaml):
what Snakemake plans and what it would hand to sbatch (a fake sbatch on PATH records the calls),
with the cluster settings from environment variables; no SLURM, no GPU needed."""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yte

from dkd.gpus import visible_gpu_count

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "slurm" / "config.yaml"
WORKFLOW_PROFILE = ROOT / "profiles" / "default" / "config.yaml"
CLUSTER = {"DKD_SLURM_PARTITION": "cpu-short", "DKD_SLURM_GPU_PARTITION": "gpu", "DKD_SLURM_ACCOUNT": "dkd-lab"}


def _environment(**values: str) -> dict[str, str]:
    """This process's environment without any DKD_*, SLURM or CUDA setting, plus ``values``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DKD_", "SNAKEMAKE_", "SLURM_")) and k != "CUDA_VISIBLE_DEVICES"
    }
    return {**env, "DKD_GPU_COUNT": "0", **values}


def snakemake(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


def tiny(tmp_path):
    """Targets and options of a tiny run whose files go under tmp_path."""
    return ["all", "--configfile", "config/tiny.yaml", "--config", f"results={tmp_path / 'results'}"]


def job_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of each job a dry-run prints."""
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", output, flags=re.M)
    return [(rule, dict(item.split("=", 1) for item in resources.split(", "))) for rule, resources in jobs]


def gpu_rules_of_the_workflow() -> dict[str, int]:
    """{rule: gpus} of every rule of workflow/rules/ that declares `gpus=` (read from the text)."""
    rules = {}
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            name, gpus = re.match(r"rule (\w+):", block), re.search(r"^\s+gpus=(\d+),?$", block, flags=re.M)
            if name and gpus:
                rules[name.group(1)] = int(gpus.group(1))
    return rules


def render(path: Path, monkeypatch, **env: str) -> dict:
    """A profile as Snakemake reads it (YTE), with these environment variables."""
    for name in [k for k in os.environ if k.startswith("DKD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with path.open() as stream:
        return yte.process_yaml(stream, require_use_yte=True)


def test_profile_slurm_is_the_folder_in_the_repository_root(monkeypatch):
    from snakemake.cli import get_profile_dir

    monkeypatch.chdir(ROOT)
    folder, file = get_profile_dir("slurm")
    assert (folder.resolve(), file.resolve()) == (SLURM.parent, SLURM)


def test_the_two_profiles_set_different_keys(monkeypatch):
    """The workflow profile wins on a key both set (whole, not merged), and it is read with
    `--profile slurm` too: it must set nothing the SLURM profile sets, nor `cores`/`jobs`."""
    slurm, local = render(SLURM, monkeypatch, **CLUSTER), render(WORKFLOW_PROFILE, monkeypatch)
    assert set(slurm) & set(local) == set()
    assert set(local) == {"resources", "set-resource-scopes"}
    assert local["set-resource-scopes"] == {"gpus": "local"}


def test_every_gpu_rule_asks_slurm_for_its_gpu(monkeypatch):
    declared = gpu_rules_of_the_workflow()
    assert declared and set(declared.values()) == {1}
    requested = render(SLURM, monkeypatch, **CLUSTER)["set-resources"]
    assert {rule for rule, res in requested.items() if res.get("gpu")} == set(declared)
    cpu_only = render(SLURM, monkeypatch, DKD_SLURM_GPUS="0")["set-resources"]
    assert all("gpu" not in res and "gpu_model" not in res and res["gpus"] == 0 for res in cpu_only.values())


def test_workflow_profile_counts_gpus_like_dkd_gpus(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    lines = [
        "GPU 0: NVIDIA H100 (UUID: GPU-a)",
        "GPU 1: NVIDIA H100 (UUID: GPU-b)",
        "  MIG 1g.10gb Device 0: (UUID: MIG-c)",
        "GPU 2: NVIDIA H100 (UUID: GPU-d)",
    ]  # 3 GPUs
    (fake / "nvidia-smi").write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in lines))
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    assert render(WORKFLOW_PROFILE, monkeypatch)["resources"] == {"gpus": 3} and visible_gpu_count() == 3
    assert (
        render(WORKFLOW_PROFILE, monkeypatch, DKD_GPU_COUNT="5")["resources"]
        == {"gpus": 5}
        == {"gpus": visible_gpu_count()}
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    assert render(WORKFLOW_PROFILE, monkeypatch)["resources"] == {"gpus": 0}


def test_local_dry_run_runs_one_job_per_gpu_of_the_machine(tmp_path):
    """Each job's `gpus` is at most the machine's count (a 4-GPU distillation on a 2-GPU machine
    gets 2); on a machine without GPU the jobs ask for none and run on the CPU."""
    two = snakemake(*tiny(tmp_path), "-n", "--set-resources", "distill:gpus=4", env=_environment(DKD_GPU_COUNT="2"))
    assert two.returncode == 0, two.stdout + two.stderr
    assert "workflow specific profile profiles/default" in two.stderr
    gpus = {rule: res.get("gpus") for rule, res in job_resources(two.stdout)}
    assert gpus == {
        "tiny_backbone": None,
        "tiny_scorer": None,
        "params": None,
        "distill": "2",
        "merge": None,
        "generate_shard": "1",
        "timing": "1",
        "images": None,
        "all": None,
    }
    none = snakemake(*tiny(tmp_path), "-n", env=_environment(DKD_GPU_COUNT="0"))
    assert none.returncode == 0, none.stdout + none.stderr
    assert {res.get("gpus") for rule, res in job_resources(none.stdout) if rule in gpus and gpus[rule]} == {"0"}


def test_slurm_dry_run_plans_the_tiny_config(tmp_path):
    run = snakemake("--profile", "slurm", *tiny(tmp_path), "-n", env=_environment(**CLUSTER))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Using profiles slurm and workflow specific profile profiles/default" in run.stderr
    jobs = job_resources(run.stdout)
    plain = snakemake(*tiny(tmp_path), "-n", "--workflow-profile", "none", env=_environment())
    assert sorted(rule for rule, _ in jobs) == sorted(rule for rule, _ in job_resources(plain.stdout))  # same plan
    for rule, res in jobs:
        if rule in ("distill", "generate_shard", "timing"):
            assert res["slurm_partition"] == "gpu" and res["gpu"] == "1", rule
        else:
            assert res["slurm_partition"] == "cpu-short" and "gpu" not in res, rule
        assert res["slurm_account"] == "dkd-lab"


def test_slurm_dry_run_on_a_cpu_only_cluster_requests_no_gpu(tmp_path):
    run = snakemake("--profile", "slurm", *tiny(tmp_path), "-n", env=_environment(DKD_SLURM_GPUS="0"))
    assert run.returncode == 0, run.stdout + run.stderr
    jobs = job_resources(run.stdout)
    assert {rule for rule, _ in jobs} >= {"distill", "generate_shard", "timing"}
    assert not any("gpu" in res or "gpu_model" in res or "slurm_partition" in res for _, res in jobs)


def test_a_malformed_cluster_variable_is_one_clear_error(tmp_path):
    run = snakemake("--profile", "slurm", *tiny(tmp_path), "-n", env=_environment(DKD_SLURM_GPUS="2"))
    assert run.returncode != 0
    assert "DKD_SLURM_GPUS='2': expected 0 or 1" in run.stderr.splitlines()[-1]


def test_the_status_command_comes_from_its_variable(monkeypatch):
    """Unset: the plugin chooses (sacct where installed); squeue for a cluster without accounting."""
    assert "slurm-status-command" not in render(SLURM, monkeypatch)
    assert render(SLURM, monkeypatch, DKD_SLURM_STATUS_COMMAND="squeue")["slurm-status-command"] == "squeue"
    with pytest.raises(Exception, match="DKD_SLURM_STATUS_COMMAND='qstat': expected sacct or squeue"):
        render(SLURM, monkeypatch, DKD_SLURM_STATUS_COMMAND="qstat")


def _decode(arguments: list[str]) -> list[str]:
    return [base64.b64decode(a.removeprefix("base64//")).decode() if a.startswith("base64//") else a for a in arguments]


FAKE_SLURM = {  # each fake tool logs its call; sbatch answers job ids, sacct says they all run
    "sbatch": 'printf "sbatch %s\\n" "$*" >> "$CALLS"; grep -c "^sbatch" "$CALLS"',
    "sacct": 'echo "sacct $*" >> "$CALLS"; n=$(grep -c "^sbatch" "$CALLS"); i=1\n'
    'while [ $i -le $n ]; do echo "$i|RUNNING"; i=$((i+1)); done',
    "sacctmgr": 'echo "$DKD_SLURM_ACCOUNT"',  # the account check
    "scancel": 'echo "scancel $*" >> "$CALLS"',
    "scontrol": 'echo "scontrol $*" >> "$CALLS"',
    "sinfo": 'echo "sinfo $*" >> "$CALLS"',
}
# The jobs of config/tiny.yaml that are ready once its two teachers exist.
FIRST_WAVE = [
    ("distill", "tiny-pixart_lorad-s4-f2-linear-zero"),
    ("distill", "tiny-pixart_sbv2-lora-s4-flora4-linear-zero"),
    ("distill", "tiny-pixart_swiftbrush-ft-sfull-flora4-linear-zero"),
    ("distill", "tiny-sd_ft-sfull-fft-linear-zero"),
    ("distill", "tiny-sd_lorad-s4-f2-linear-zero"),
    ("distill", "tiny-sd_pgsb-ft-sfull-flora4-linear-zero"),
    ("distill", "tiny-sd_sidlsg-ft-sfull-fft-linear-zero"),
    ("generate_shard", "tiny-sd_teacher_tiny-eval_0"),
    ("generate_shard", "tiny-sd_teacher_tiny-eval_1"),
    ("params", None),
    ("timing", "tiny-sd_teacher"),
]


def _submitted(calls: Path) -> dict:
    """{(rule, wildcards): (sbatch arguments, the job's decoded Snakemake command)} of a calls log."""
    submitted = {}
    for line in calls.read_text().splitlines() if calls.exists() else []:
        if line.startswith("sbatch "):
            sbatch, _, wrapped = line.partition("--wrap=")
            rule = re.search(r"--comment rule_(\w+?)(?:_wildcards_(\S+))?\s", sbatch)
            submitted[(rule.group(1), rule.group(2))] = (sbatch.split(), _decode(shlex.split(wrapped)))
    return submitted


def _submit_first_wave(tmp_path, **env_values) -> tuple[dict, Path, str]:
    """Run ``snakemake --profile slurm all`` of config/tiny.yaml against a fake SLURM whose jobs
    run forever, until the first wave of jobs is submitted; returns ``_submitted``, the calls log
    and Snakemake's output."""
    (tmp_path / "config").symlink_to(ROOT / "config")  # the run's working directory is tmp_path
    for backbone in ("tiny-sd", "tiny-pixart"):  # the teachers exist: distillation and teacher images are ready
        index = tmp_path / "results" / "tiny" / "backbones" / backbone / "model_index.json"
        index.parent.mkdir(parents=True)
        index.write_text("{}")
    scorer = tmp_path / "results" / "tiny" / "backbones" / "tiny-scorer" / "scorer.json"  # and the CLIP loss's scorer
    scorer.parent.mkdir(parents=True)
    scorer.write_text("{}")
    fake, calls = tmp_path / "bin", tmp_path / "slurm-calls.txt"
    fake.mkdir()
    for tool, script in FAKE_SLURM.items():
        (fake / tool).write_text(f"#!/bin/sh\n{script}\n")
        (fake / tool).chmod(0o755)
    env = _environment(
        **CLUSTER, DKD_GPU_COUNT="1", CALLS=str(calls), PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", **env_values
    )
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "slurm",
        "all",
        "--configfile",
        "config/tiny.yaml",
        "--directory",
        str(tmp_path),
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--slurm-status-command",
        "sacct",
    ]
    run = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(_submitted(calls)) < len(FIRST_WAVE) and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        time.sleep(1.5)  # a status check of the running jobs, and no further submission
    finally:
        run.kill()  # nothing to clean up: the fake jobs never ran, and .snakemake/ is in tmp_path
        output = run.communicate(timeout=60)[0]
    return _submitted(calls), calls, output


def test_slurm_submits_gpu_jobs_side_by_side_with_their_requests(tmp_path):
    """A real run against a fake SLURM whose jobs run forever: the executor is SLURM; the first
    GPU jobs are all submitted at once although this machine counts one GPU (the workflow
    profile's `gpus` limit is local-scoped; global, it would hold back all but one); each sbatch
    call carries the profile's partition, account, GPUs, CPUs, time and --requeue; the job's own
    Snakemake gets its GPU count (`distill:gpus=2`) without the local limit."""
    submitted, calls, output = _submit_first_wave(tmp_path, DKD_SLURM_DISTILL_GPUS="2")
    assert sorted(submitted, key=str) == sorted(FIRST_WAVE, key=str), output
    assert "sacct -X" in calls.read_text()  # the jobs were polled as running, all at once
    distill, job = submitted[("distill", "tiny-sd_lorad-s4-f2-linear-zero")]
    for flag in (
        "-A dkd-lab",
        "-p gpu",
        "-t 2880",
        "--mem 128000",
        "--nodes=1",
        "--requeue",
        "--cpus-per-task=16",
        "--gpus=2",
    ):
        assert flag in " ".join(distill), flag
    assert "--executor" in job and job[job.index("--executor") + 1] == "slurm-jobstep"
    assert "distill:gpus=2" in job and "--resources" not in job
    shard, _ = submitted[("generate_shard", "tiny-sd_teacher_tiny-eval_0")]
    assert {"--gpus=1", "--requeue", "--cpus-per-task=1"} <= set(shard) and " -p gpu " in f" {' '.join(shard)} "
    params, _ = submitted[("params", None)]
    assert " -p cpu-short " in f" {' '.join(params)} " and not any(a.startswith("--gpus") for a in params)


def test_slurm_submits_a_multi_node_distillation(tmp_path):
    """DKD_SLURM_DISTILL_NODES=2: one task per node with the per-node GPUs (gres), CPUs and memory,
    and the `mpi` resource, so that the jobstep executor runs the rule itself (which starts srun)."""
    submitted, _, output = _submit_first_wave(
        tmp_path, DKD_SLURM_DISTILL_GPUS="4", DKD_SLURM_DISTILL_NODES="2", DKD_SLURM_GPU_MODEL="a100"
    )
    distill, job = submitted[("distill", "tiny-sd_lorad-s4-f2-linear-zero")]
    for flag in ("--nodes=2", "--ntasks=2", "--gres=gpu:a100:4", "--cpus-per-task=32", "--mem 256000", "--requeue"):
        assert flag in " ".join(distill), (flag, output)
    assert not any(a.startswith(("--gpus", "--ntasks-per-gpu")) for a in distill)
    resources = job[job.index("--set-resources") + 1 :]
    assert "distill:mpi='srun'" in resources and "distill:nodes=2" in resources and "distill:gpus=4" in resources
    shard, _ = submitted[("generate_shard", "tiny-sd_teacher_tiny-eval_0")]
    assert "--nodes=2" not in shard and "--gpus=a100:1" in shard


def test_a_malformed_node_count_is_one_clear_error(monkeypatch):
    with pytest.raises(Exception, match=r"DKD_SLURM_DISTILL_NODES='0': expected a whole number >= 1"):
        render(SLURM, monkeypatch, DKD_SLURM_DISTILL_NODES="0")
