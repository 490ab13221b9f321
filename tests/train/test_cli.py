"""`python -m dkd distill`: one named run outside the workflow, with the settings of a workflow config
and command-line overrides; compared with the same run written out by hand through the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dkd.__main__ import main
from dkd.adapters import AdapterSpec
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.train import cli
from dkd.train.config import DistillConfig, OptimConfig
from dkd.train.export import export_student
from dkd.train.loop import TrainingInterrupted, distill
from dkd.train.objective import ObjectiveConfig

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [f"a handwritten digit {d} number {i}" for i in range(3) for d in range(4)]
RUN = "lorad-s4-f2-linear-zero"


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    return str(save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=3))


def _command(teacher_folder, tmp_path, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return [
        "distill",
        RUN,
        "--backbone",
        "tiny-sd",
        "--source",
        teacher_folder,
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "run"),
        "--config",
        str(ROOT / "config" / "tiny.yaml"),
        *extra,
    ]


def _exported(out: Path) -> dict:
    return {
        (str(path.relative_to(out)), name): tensor
        for path in sorted([*out.glob("adapter/**/*.safetensors"), *out.glob("pipeline/**/*.safetensors")])
        for name, tensor in load_file(path).items()
    }


def test_distill_command_equals_the_run_written_out_by_hand_and_a_rerun_only_exports(teacher_folder, tmp_path, capsys):
    """config/tiny.yaml's distill.settings (batch 4 of 2 per device, seed 0, checkpoint every 2), then
    --set overrides of a top-level, a nested and an optimiser setting: the exported adapter and
    pipeline equal those of DistillConfig(...) spelled out by hand, trained with `distill`."""
    command = _command(
        teacher_folder,
        tmp_path,
        "--set",
        "max_steps=2",
        "--set",
        "objective.guidance_scale=2.5",
        "--set",
        "optim_student.lr=3e-4",
    )
    assert main(command) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["steps"] == 2 and printed["processes"] == 1

    config = DistillConfig(
        backbone="tiny-sd",
        student=AdapterSpec("tiny-sd", "student", "lorad", rank=4),
        fake=AdapterSpec("tiny-sd", "fake", "lorad", rank=2),
        batch_size=4,
        per_device_batch=2,
        max_steps=2,
        checkpoint_every=2,
        log_every=1,
        seed=0,
        objective=ObjectiveConfig(guidance_scale=2.5),
        optim_student=OptimConfig(lr=3e-4),
    )
    teacher = load_teacher("tiny-sd", teacher_folder)
    result = distill(config, teacher, PROMPTS, tmp_path / "by-hand" / "train", progress=False)
    export_student(result.student, config.student, teacher, tmp_path / "by-hand")
    ours, theirs = _exported(tmp_path / "run"), _exported(tmp_path / "by-hand")
    assert ours.keys() == theirs.keys() and any(key[0].startswith("adapter") for key in ours)
    assert all(ours[key].equal(theirs[key]) for key in ours)

    log = (tmp_path / "run" / "train" / "log.csv").read_text()
    assert main(command) == 0  # finished: loaded and exported again, not trained
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    assert (tmp_path / "run" / "train" / "log.csv").read_text() == log


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--set", "max_steps"], "expected KEY=VALUE"),
        (["--set", "student=lora"], "fixed by the backbone and the run name"),
        (["--set", "no_such_setting=1"], "unknown distillation settings: ['no_such_setting']"),
        (["--set", "batch_size=3"], "batch_size 3 must be a multiple of per_device_batch 2"),
        (["--set", "objective.guidance=2"], "unknown objective settings: ['guidance']"),
        (["--set", "objective=2"], "objective must be a mapping of its settings; got 2"),
        (["--set", "objective.name=swiftbrush"], "trains with objective 'dkd', not 'swiftbrush'"),
        (["--set", "seed=abc"], "seed must be a whole number; got 'abc'"),
        (["--set", "compile_blocks=[A,"], "is not a valid YAML list or mapping"),
        (["--config", "missing.yaml"], "--config missing.yaml"),
        (["--prompts", "missing.txt"], "--prompts missing.txt: no such file"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(teacher_folder, tmp_path, capsys, extra, message):
    assert main(_command(teacher_folder, tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_run_name_source_and_a_stop_signal(teacher_folder, tmp_path, capsys, monkeypatch):
    """A bad run name, a tiny backbone without --source: one error each; a run stopped by a signal
    (TrainingInterrupted after its checkpoint) exits with 75, the code SLURM scripts retry on."""
    command = _command(teacher_folder, tmp_path)
    assert main([command[0], "lorad-x", *command[2:]]) == 2 and "run name 'lorad-x'" in capsys.readouterr().err
    no_source = command[:4] + command[6:]
    assert main(no_source) == 2 and "give --source FOLDER" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("distill: {settings: [\n")
    assert main([*command, "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: not valid YAML" in err and " at line " in err and len(err.strip().splitlines()) == 1

    def stopped(*args, **kwargs):
        raise TrainingInterrupted("signal 15 at step 4; checkpoint run/train/checkpoints/step-00000004")

    monkeypatch.setattr("dkd.train.run.distill_run", stopped)
    assert main(command) == 75
    assert "step 4" in capsys.readouterr().err


def test_settings_from_a_workflow_config_or_a_mapping_and_overrides(tmp_path):
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(
        "backbones:\n  sd15: {source: a/b, dtype: float16}\n"
        "distill:\n  settings: {max_steps: 5, objective: {t_init: 999}}\n"
        "  objectives: {dkd: {seed: 2}, sid_lsg: {seed: 4, objective: {sid_alpha: 1.2}}}\n"
        "  run_settings:\n    ft-sfull-fft-linear-zero: {generator_every: 10, objective: {guidance_scale: 1.75}}\n"
    )
    assert cli.read_settings(str(workflow), "sd15", RUN) == (
        {"max_steps": 5, "seed": 2, "objective": {"t_init": 999}},
        {"source": "a/b", "dtype": "float16"},
    )
    assert cli.read_settings(str(workflow), "sd15", "ft-sfull-fft-linear-zero")[0] == {
        "max_steps": 5,
        "seed": 2,
        "generator_every": 10,
        "objective": {"t_init": 999, "guidance_scale": 1.75},
    }
    assert cli.read_settings(str(workflow), "sd15", "sidlsg-ft-sfull-fft-linear-zero")[0] == {
        "max_steps": 5,
        "seed": 4,
        "objective": {"t_init": 999, "sid_alpha": 1.2},
    }
    mapping = tmp_path / "settings.yaml"
    mapping.write_text("max_steps: 7\nseed: 3\n")
    assert cli.read_settings(str(mapping), "sd15", RUN) == ({"max_steps": 7, "seed": 3}, {})
    settings = {"objective": {"t_init": 999}, "seed": 1}
    assert cli.apply_overrides(
        settings,
        [
            "objective.guidance_scale=2.0",
            "compile_blocks=[A, B]",
            "max_steps=null",
            "optim_fake.lr=1.0e-3",
            "mixed_precision=no",
            "channels_last=true",
            "optim_student.lr=3e-4",
        ],
    ) == {
        "objective": {"t_init": 999, "guidance_scale": 2.0},
        "seed": 1,
        "compile_blocks": ["A", "B"],
        "max_steps": None,
        "optim_fake": {"lr": 1e-3},
        "mixed_precision": "no",
        "channels_last": True,
        "optim_student": {"lr": 3e-4},
    }
    assert settings == {"objective": {"t_init": 999}, "seed": 1}  # the input is left as it was
    with pytest.raises(ValueError, match="'seed' is not a nested setting"):
        cli.apply_overrides(settings, ["seed.x=1"])
    assert cli.teacher_source("sd15", None, {}) == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert cli.teacher_source("sd15", None, {"source": "a/b"}) == "a/b"
    assert cli.teacher_source("sd15", "folder", {"source": "a/b"}) == "folder"


def test_processes_and_nodes_reach_the_launcher(teacher_folder, tmp_path, capsys, monkeypatch):
    """--processes N --nodes M: the run's job goes to dkd.train.launch.run_distillation with them
    (inside a SLURM allocation it starts one srun task per node; tested in tests/train/test_nodes.py)."""
    seen = {}

    def launcher(job, *, processes, nodes, cpus):
        seen.update(processes=processes, nodes=nodes, train_dir=job.train_dir)
        raise ValueError("stopped before training")

    monkeypatch.setattr("dkd.train.run.run_distillation", launcher)
    assert main([*_command(teacher_folder, tmp_path), "--processes", "4", "--nodes", "2"]) == 2
    assert "stopped before training" in capsys.readouterr().err
    assert seen == {"processes": 4, "nodes": 2, "train_dir": str(tmp_path / "run" / "train")}
