"""DreamBooth on the project's trainer (dkd.downstream.dreambooth.train) with the tiny SD teacher: a killed run
resumed from its checkpoint and a run stopped by SIGTERM end bit-identical to an uninterrupted one (weights
and log), only the adapter trains (every base weight unchanged), a checkpoint of other settings is refused,
the batches are a function of the step, and an exported arm loads back to the trained U-Net's output."""

from __future__ import annotations

import csv
import os
import signal

import pytest
import torch

from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.downstream.dreambooth.data import draw_subject
from dkd.downstream.dreambooth.evaluate import generate_class_images
from dkd.downstream.dreambooth.method import DreamBoothConfig
from dkd.downstream.dreambooth.train import (
    DreamBoothTrainer,
    SubjectBatches,
    TrainSettings,
    export_arm,
    load_arm,
    read_arm,
    train_arm,
)
from dkd.train.checkpoint import list_checkpoints
from dkd.train.loop import TrainingInterrupted

PROMPTS = ("a photo of sks toy", "a photo of toy")
ADAPTER_KEYS = {"lorad": ("lorad_A", "lorad_B"), "lora": ("lora_A", "lora_B")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tiny teacher's folder, three drawn photos (24 px, cropped to 16) and two class images it samples."""
    root = tmp_path_factory.mktemp("dreambooth")
    teacher = str(save_tiny_backbone("sd", root / "tiny-sd", seed=0))
    draw_subject("red_disc", root / "photos", count=3, size=24, seed=0)
    sampling = {"steps": 2, "guidance_scale": 3.0, "scheduler": "DDIMScheduler"}
    paths = generate_class_images(_teacher(teacher), PROMPTS[1], 2, root / "class", sampling=sampling, batch_size=2)
    assert [p.name for p in paths] == ["00000.png", "00001.png"]
    return teacher, root / "photos", root / "class"


def _teacher(folder):
    return load_teacher("tiny-sd", folder)


def _settings(method="lorad", **changes) -> TrainSettings:
    config = DreamBoothConfig.paper(method, **{"rank": 2, "steps": 4, "resolution": 16, "class_images": 2, "seed": 3,
                                               **changes})  # fmt: skip
    return TrainSettings(config, checkpoint_every=2, keep_checkpoints=2, log_every=1)


def _run(data, out, method="lorad", **changes):
    teacher, photos, classes = data
    return train_arm(_settings(method, **changes), _teacher(teacher), photos, classes, out, prompts=PROMPTS,
                     progress=False)  # fmt: skip


def _trained(result) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in result.unet.named_parameters() if p.requires_grad}


def _log(folder) -> list[dict]:
    with open(folder / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module", params=["lorad", "ft"])
def uninterrupted(request, data, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"run-{request.param}")
    return request.param, out, _run(data, out, request.param)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_complete_run_logs_checkpoints_and_learns(uninterrupted, data):
    method, out, result = uninterrupted
    assert result.steps == 4 and result.cost["steps"] == 4 and result.cost["processes"] == 1
    rows = _log(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["loss"]) == pytest.approx(float(r["instance_loss"]) + float(r["prior_loss"])) for r in rows)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000002", "step-00000004"]
    assert (out / "checkpoints" / "step-00000004" / "unet.safetensors").is_file()  # the host's model name
    fresh = DreamBoothTrainer(_settings(method), _teacher(data[0]), *data[1:], out / "unused", prompts=PROMPTS)
    initial = {n: p for n, p in fresh.models["unet"].named_parameters() if p.requires_grad}
    trained = _trained(result)
    assert initial.keys() == trained.keys()
    assert any(not torch.equal(initial[n], trained[n]) for n in initial)


def killed_at_step(step: int, run, monkeypatch) -> None:
    """``run()`` killed as it starts step ``step`` (a KeyboardInterrupt: no checkpoint, as after SIGKILL)."""
    original = DreamBoothTrainer.train_step

    def dying(self):
        if self.step == step:
            raise KeyboardInterrupt("killed")
        return original(self)

    monkeypatch.setattr(DreamBoothTrainer, "train_step", dying)
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        monkeypatch.setattr(DreamBoothTrainer, "train_step", original)


def test_kill_after_a_checkpoint_then_resume_is_bit_identical(uninterrupted, data, tmp_path, monkeypatch):
    method, out, reference = uninterrupted
    killed_at_step(3, lambda: _run(data, tmp_path, method), monkeypatch)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002"]
    resumed = _run(data, tmp_path, method)
    assert resumed.steps == 4
    _assert_same(_trained(resumed), _trained(reference))
    assert _log(tmp_path) == _log(out)  # the killed attempt's rows past step 2 replaced by the same values
    assert [a["steps"] for a in resumed.attempts] == [[0, 2], [2, 4]]  # two attempts in the cost record


def test_sigterm_saves_and_stops_then_resumes_bit_identical(uninterrupted, data, tmp_path, monkeypatch):
    method, _, reference = uninterrupted
    original = DreamBoothTrainer.train_step

    def signalled(self):
        if self.step == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # recorded by StopSignals: the step finishes, then a save
        return original(self)

    monkeypatch.setattr(DreamBoothTrainer, "train_step", signalled)
    with pytest.raises(TrainingInterrupted, match="signal 15 at step 1"):
        _run(data, tmp_path, method)
    monkeypatch.setattr(DreamBoothTrainer, "train_step", original)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001"]
    _assert_same(_trained(_run(data, tmp_path, method)), _trained(reference))


@pytest.mark.parametrize("method", ["lorad", "lora"])
def test_only_the_adapter_trains(method, data, tmp_path):
    teacher = _teacher(data[0])
    base = {name: p.detach().clone() for name, p in teacher.denoiser.named_parameters()}
    result = _run(data, tmp_path, method)
    trainable = {n for n, p in result.unet.named_parameters() if p.requires_grad}
    assert trainable and all(any(f".{key}." in n for key in ADAPTER_KEYS[method]) for n in trainable)
    frozen = {n.replace(".base_layer.", "."): p for n, p in result.unet.named_parameters() if not p.requires_grad}
    assert frozen.keys() == base.keys()
    assert all(torch.equal(frozen[name], base[name]) for name in base)  # every base weight as the teacher's
    saved = list_checkpoints(tmp_path / "checkpoints")[-1] / "unet.safetensors"
    from safetensors.torch import load_file

    assert set(load_file(str(saved))) == trainable  # a checkpoint holds the adapter only


def test_resume_refuses_a_checkpoint_of_other_settings(uninterrupted, data):
    method, out, _ = uninterrupted
    with pytest.raises(ValueError, match="fingerprint"):
        _run(data, out, method, lr=3e-4)


def test_batches_are_a_function_of_the_step(data):
    config = _settings().dreambooth
    a, b = SubjectBatches(data[1], data[2], config), SubjectBatches(data[1], data[2], config)
    for step in (0, 5, 2):
        assert torch.equal(a.pixels(step), b.pixels(step))
    pixels = a.pixels(1)
    assert pixels.shape == (2, 3, 16, 16) and pixels.dtype == torch.float32
    assert sorted(a.index("instance", e) for e in range(3)) == [0, 1, 2]  # an epoch sees each photo once
    assert sorted(a.index("instance", e) for e in range(3, 6)) == [0, 1, 2]
    with pytest.raises(ValueError, match="3 class images needed"):
        SubjectBatches(data[1], data[2], DreamBoothConfig.paper("lorad", class_images=3))


@pytest.mark.parametrize("method", ["lorad", "ft"])
def test_exported_arm_loads_back(method, data, tmp_path):
    result = _run(data, tmp_path / "train", method, steps=2)
    config = _settings(method, steps=2).dreambooth
    export_arm(result, config, tmp_path / "arm", subject="red_disc")
    record = read_arm(tmp_path / "arm")
    assert record["trainable_parameters"] == result.trainable and record["subject"] == "red_disc"
    assert DreamBoothConfig(**record["config"]) == config
    loaded = load_arm(_teacher(data[0]), tmp_path / "arm").denoiser
    generator = torch.Generator().manual_seed(0)
    x, t, states = torch.randn(2, 4, 8, 8, generator=generator), torch.tensor([10, 700]), torch.randn(2, 77, 16)
    with torch.no_grad():
        expected = result.unet.eval()(x, t, encoder_hidden_states=states).sample
        assert torch.equal(loaded(x, t, encoder_hidden_states=states).sample, expected)
