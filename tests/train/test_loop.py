"""The distillation loop on a tiny teacher: a complete run, bit-exact resume, signals, NaN; for DKD and
for each baseline objective at its recipe's adapters and optimiser (the same guarantees for all)."""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest
import torch

from dkd.adapters import AdapterSpec
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.train import loop as loop_module
from dkd.train.checkpoint import list_checkpoints, load_state, training_cost
from dkd.train.config import DistillConfig, OptimConfig
from dkd.train.loop import Distiller, NonFiniteLossError, TrainingInterrupted
from dkd.train.objective import OBJECTIVES, ObjectiveConfig
from tests.train.test_logger import tensorboard_scalars

PROMPTS = [f"a handwritten digit {d} number {i}" for i in range(4) for d in range(4)]


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    return str(save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=2))


FULL = {"student": AdapterSpec("tiny-sd", "student", "ft"), "fake": AdapterSpec("tiny-sd", "fake", "ft")}
ADAM = OptimConfig(lr=1e-4, weight_decay=0.0, grad_clip=1.0)
# each baseline with its recipe's kind of student, fake and optimiser (dkd.runs, docs/baselines.md)
RECIPES = {
    "dkd": {},
    "sid_lsg": {**FULL, "optim_student": OptimConfig(lr=1e-4, betas=(0.0, 0.999), weight_decay=0.0, grad_clip=None)},
    "swiftbrush": {
        "student": FULL["student"],
        "fake": AdapterSpec("tiny-sd", "fake", "lora", rank=2, targets=("to_q", "to_v"), alpha=3),
        "optim_student": ADAM,
        "optim_fake": ADAM,
    },
}
RECIPES["pg_sb"] = {
    **RECIPES["swiftbrush"],
    "fake": AdapterSpec("tiny-sd", "fake", "lora", rank=2, targets=("to_q", "to_v"), alpha=4),
}
RECIPES["swiftbrush_v2"] = {  # scheme B: a LoRA student (scheme A's full student is SwiftBrush's recipe)
    **RECIPES["pg_sb"],
    "student": AdapterSpec("tiny-sd", "student", "lora", rank=2, alpha=4),
}
assert set(RECIPES) == set(OBJECTIVES)


class _Scorer(torch.nn.Module):
    """A parameter-free image-text scorer for the clamped CLIP loss: differentiable in x0, prompt-dependent."""

    def forward(self, x0, prompts):
        shift = torch.tensor([len(p) / 100 for p in prompts], device=x0.device)
        return torch.tanh(x0.float().mean(dim=(1, 2, 3)) + shift)


def distill(config, *args, **kwargs):
    """``dkd.train.loop.distill``, with a scorer for an objective with the clamped CLIP loss (PG-SB)."""
    if config.objective.scored:
        kwargs.setdefault("scorer", _Scorer())
    return loop_module.distill(config, *args, **kwargs)


def _config(objective="dkd", **overrides):
    values = dict(
        backbone="tiny-sd",
        student=AdapterSpec("tiny-sd", "student", "lorad", rank=4),
        fake=AdapterSpec("tiny-sd", "fake", "lorad", rank=2),
        objective=ObjectiveConfig.named(objective),
        batch_size=4,
        per_device_batch=2,
        max_steps=4,
        checkpoint_every=2,
        keep_checkpoints=2,
        log_every=1,
        seed=7,
    )
    values.update(RECIPES[objective])
    values.update(overrides)
    return DistillConfig(**values)


def _weights(result):
    return {
        role: {n: p.detach().clone() for n, p in getattr(result, role).named_parameters() if p.requires_grad}
        for role in ("student", "fake")
    }


def _assert_same(a, b):
    for role in a:
        assert a[role].keys() == b[role].keys()
        for name in a[role]:
            assert torch.equal(a[role][name], b[role][name]), (role, name)


def _log(folder, timing=True):
    with open(folder / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows if timing else [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]


@pytest.fixture(scope="module", params=list(RECIPES))
def objective(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def uninterrupted(objective, teacher_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"run-{objective}")
    config = _config(objective)
    return out, _weights(distill(config, load_teacher("tiny-sd", teacher_folder), PROMPTS, out, progress=False))


def test_complete_run_writes_log_checkpoints_and_trains(objective, uninterrupted, teacher_folder):
    out, weights = uninterrupted
    rows = _log(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    generator = "loss_sid" if objective == "sid_lsg" else "loss_vsd"
    assert all(float(r["loss_fake"]) > 0 and abs(float(r[generator])) < 1e6 for r in rows)
    if objective == "pg_sb":  # one guidance scale per step in U(0.5, 3); the CLIP loss's weight 0.1 -> 0
        assert all(0.5 <= float(r["guidance"]) < 3.0 for r in rows) and len({r["guidance"] for r in rows}) == 4
        assert [float(r["clip_weight"]) for r in rows] == pytest.approx([0.1, 0.1 * 2 / 3, 0.1 / 3, 0.0])
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000002", "step-00000004"]
    assert (out / "config.json").is_file()
    scorer = _Scorer() if OBJECTIVES[objective].scored else None
    fresh = Distiller(
        _config(objective), load_teacher("tiny-sd", teacher_folder), PROMPTS, out / "unused", scorer=scorer
    )
    initial = {n: p for n, p in fresh.models["student"].named_parameters() if p.requires_grad}
    assert any(not torch.equal(initial[n], weights["student"][n]) for n in initial)


def killed_at_step(step: int, run, monkeypatch) -> None:
    """``run()`` (a distillation) killed as it starts step ``step`` (a KeyboardInterrupt: no
    checkpoint is written, as after SIGKILL); ``Distiller.train_step`` is restored afterwards."""
    original = Distiller.train_step

    def dying(self):
        if self.step == step:
            raise KeyboardInterrupt("killed")
        return original(self)

    monkeypatch.setattr(Distiller, "train_step", dying)
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        monkeypatch.setattr(Distiller, "train_step", original)


def test_kill_between_checkpoints_then_resume_is_bit_identical(
    objective, uninterrupted, teacher_folder, tmp_path, monkeypatch
):
    out_a, weights_a = uninterrupted
    # after the checkpoint of step 2, before that of step 4
    killed_at_step(
        3,
        lambda: distill(_config(objective), load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False),
        monkeypatch,
    )
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002"]
    result = distill(_config(objective), load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False)
    assert result.steps == 4
    _assert_same(_weights(result), weights_a)
    assert _log(tmp_path, timing=False) == _log(out_a, timing=False)
    # TensorBoard: the killed attempt's step 3 is purged, each step appears once with the same values
    resumed, reference = (tensorboard_scalars(folder / "tensorboard" / "log") for folder in (tmp_path, out_a))
    assert resumed.keys() == reference.keys() and "loss_fake" in resumed
    assert all(resumed[tag] == reference[tag] for tag in resumed if tag != "samples_per_s")
    assert [step for step, _ in resumed["samples_per_s"]] == [1, 2, 3, 4]


def test_resume_may_change_speed_and_logging_settings(objective, uninterrupted, teacher_folder, tmp_path, monkeypatch):
    """Gradient checkpointing (recomputed activations) and the log period are not part of a run's
    identity: a run resumed with them ends as the uninterrupted run."""
    _, weights_a = uninterrupted
    killed_at_step(
        3,
        lambda: distill(_config(objective), load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False),
        monkeypatch,
    )
    config = _config(objective, gradient_checkpointing=True, log_every=2)
    result = distill(config, load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False)
    assert result.steps == 4 and result.student.is_gradient_checkpointing
    _assert_same(_weights(result), weights_a)


def test_sigterm_saves_a_checkpoint_and_stops(objective, uninterrupted, teacher_folder, tmp_path, monkeypatch):
    _, weights_a = uninterrupted
    original = Distiller.train_step

    def signalled(self):
        logs = original(self)
        if self.step == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return logs

    monkeypatch.setattr(Distiller, "train_step", signalled)
    with pytest.raises(TrainingInterrupted, match="signal .* at step 1"):
        distill(_config(objective), load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001"]
    monkeypatch.setattr(Distiller, "train_step", original)
    _assert_same(
        _weights(
            distill(_config(objective), load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False)
        ),
        weights_a,
    )


@pytest.mark.parametrize("objective", list(RECIPES))
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
    objective, teacher_folder, tmp_path, monkeypatch
):
    original = loop_module.fake_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, logs = original(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), logs) if calls["n"] > 4 else (loss, logs)  # 2 micro-batches per step

    monkeypatch.setattr(loop_module, "fake_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="fake loss at step 3.*step-00000002"):
        distill(_config(objective), load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002"]


def test_generator_every_and_epochs(teacher_folder, tmp_path):
    config = _config(max_steps=None, epochs=2, generator_every=2, checkpoint_every=100)
    result = distill(config, load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False)
    assert result.steps == 2 * len(PROMPTS) // 4
    vsd = [r["loss_vsd"] for r in _log(tmp_path)]
    # the generator is updated at steps 1, 3, 5, 7; rows in between carry its latest values
    assert all(vsd[i] == vsd[i - 1] for i in (1, 3, 5, 7)) and all(vsd[i] != vsd[i - 1] for i in (2, 4, 6))
    changes = 1 + sum(vsd[i] != vsd[i - 1] for i in range(1, len(vsd)))  # the generator's updates, from the log
    expected = {"generator_updates": changes, "fake_updates": result.steps}
    assert config.updates(result.steps) == expected == {"generator_updates": 4, "fake_updates": 8}


def test_resume_refuses_a_checkpoint_of_other_settings(objective, uninterrupted, teacher_folder, tmp_path):
    out, _ = uninterrupted
    import shutil

    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="other settings or another teacher"):
        distill(_config(objective, seed=8), load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False)
    other_teacher = load_teacher("tiny-sd", str(save_tiny_backbone("sd", tmp_path / "other", seed=3)))
    with pytest.raises(ValueError, match="other settings or another teacher"):
        distill(_config(objective), other_teacher, PROMPTS, tmp_path, progress=False)


def test_log_gains_the_generator_columns_when_they_first_appear(teacher_folder, tmp_path):
    config = _config(max_steps=4, generator_every=2, log_every=2, checkpoint_every=100)
    distill(config, load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False)
    rows = _log(tmp_path)
    assert [int(r["step"]) for r in rows] == [2, 4] and "loss_vsd" in rows[0] and "grad_norm_student" in rows[0]


def test_an_objective_with_the_clip_loss_needs_a_scorer(teacher_folder, tmp_path):
    with pytest.raises(ValueError, match="needs an image-text scorer"):
        Distiller(_config("pg_sb"), load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path)


def test_half_precision_teacher_needs_mixed_precision(teacher_folder, tmp_path):
    teacher = load_teacher("tiny-sd", teacher_folder, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="mixed_precision"):
        Distiller(_config(), teacher, PROMPTS, tmp_path)


def test_evaluation_hook_logs_a_curve_and_leaves_training_unchanged(objective, uninterrupted, teacher_folder, tmp_path):
    """eval_every=2 over 4 steps: the hook sees steps 0, 2, 4 with the student in eval mode, its
    values go to curve.csv, and the trained weights equal the run without the hook; a resumed run
    keeps the curve rows up to its checkpoint and adds the rest once."""
    calls = []

    def evaluate(step, student):
        assert not student.training and not torch.is_grad_enabled()
        calls.append(step)
        return {"metric": float(step) / 10}

    out = tmp_path / "hook"
    result = distill(
        _config(objective, eval_every=2),
        load_teacher("tiny-sd", teacher_folder),
        PROMPTS,
        out,
        progress=False,
        evaluate=evaluate,
    )
    assert calls == [0, 2, 4]
    with open(out / "curve.csv", newline="") as handle:
        assert [(r["step"], r["metric"]) for r in csv.DictReader(handle)] == [("0", "0.0"), ("2", "0.2"), ("4", "0.4")]
    assert result.student.training  # restored after each evaluation
    _assert_same(_weights(result), uninterrupted[1])

    calls.clear()  # an attempt killed in its evaluation at step 4 resumes from the checkpoint of step 2
    resumed = tmp_path / "resumed"

    def killed(step, student):
        if step == 4:
            raise KeyboardInterrupt
        return evaluate(step, student)

    with pytest.raises(KeyboardInterrupt):
        distill(
            _config(objective, eval_every=2),
            load_teacher("tiny-sd", teacher_folder),
            PROMPTS,
            resumed,
            progress=False,
            evaluate=killed,
        )
    final = distill(
        _config(objective, eval_every=2),
        load_teacher("tiny-sd", teacher_folder),
        PROMPTS,
        resumed,
        progress=False,
        evaluate=evaluate,
    )
    assert calls == [0, 2, 4]
    assert (out / "curve.csv").read_text() == (resumed / "curve.csv").read_text()
    (curve,) = tensorboard_scalars(resumed / "tensorboard" / "curve").items()  # TensorBoard keeps float32
    assert curve[0] == "metric" and curve[1] == [(0, 0.0), (2, torch.tensor(0.2).item()), (4, torch.tensor(0.4).item())]
    _assert_same(_weights(final), uninterrupted[1])
    with pytest.raises(ValueError, match="eval_every"):
        _config(objective, eval_every=0)


def test_resumed_run_adds_up_its_training_seconds(objective, uninterrupted, teacher_folder, tmp_path, monkeypatch):
    """The training cost on a fake clock: each step takes 5 s and each evaluation 100 s (not
    training: not counted). Attempt 1 stops after step 1 (SIGTERM), attempt 2 resumes for steps
    2-4: 5 + 15 = 20 s on 1 process = 20 / 86400 GPU-days. The record changes neither the run's
    fingerprint nor its weights."""
    now = [1000.0]
    monkeypatch.setattr(loop_module, "_clock", lambda: now[0])
    original = Distiller.train_step

    def timed(self):
        now[0] += 5.0
        logs = original(self)
        if self.step == 0 and not list_checkpoints(tmp_path / "checkpoints"):
            os.kill(os.getpid(), signal.SIGTERM)
        return logs

    def evaluate(step, student):
        now[0] += 100.0
        return {"metric": 0.0}

    monkeypatch.setattr(Distiller, "train_step", timed)
    config = _config(objective, eval_every=2)
    with pytest.raises(TrainingInterrupted):
        distill(config, load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False, evaluate=evaluate)
    state = load_state(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert state["attempts"] == [{"device": "cpu", "processes": 1, "seconds": 5.0, "steps": [0, 1]}]
    result = distill(
        config, load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path, progress=False, evaluate=evaluate
    )
    state = load_state(result.checkpoint)
    assert state["attempts"][1] == {"device": "cpu", "processes": 1, "seconds": 15.0, "steps": [1, 4]}
    assert training_cost(state) == {"gpu_days": 20.0 / 86400, "train_hours": 20.0 / 3600, "processes": 1, "steps": 4}
    on_gpu = {**state, "attempts": [{**a, "peak_memory_gb": gb} for a, gb in zip(state["attempts"], (1.5, 2.0))]}
    assert training_cost(on_gpu)["memory_mb"] == 2048.0  # Table 4: the largest peak of the attempts, MiB
    fingerprint = json.loads((uninterrupted[0] / "config.json").read_text())["fingerprint"]
    assert json.loads((tmp_path / "config.json").read_text())["fingerprint"] == fingerprint == state["fingerprint"]
    _assert_same(_weights(result), uninterrupted[1])
