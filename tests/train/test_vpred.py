"""A v-prediction teacher (SD2.1-768's parameterisation) end to end: the fake model regresses v,
the one-step student's x0 is read off as a v model's, and the exported pipeline reproduces it."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMScheduler

from dkd.adapters import AdapterSpec
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.sampling import STUDENT_INFO, OneStepPipeline, seeded_noise, to_pil
from dkd.train import step as step_module
from dkd.train.config import DistillConfig
from dkd.train.export import export_student
from dkd.train.loop import distill
from dkd.train.step import generate

PROMPTS = [f"a watercolour of a {thing}" for thing in ("fox", "boat", "tree", "house", "cat", "bridge", "cup", "owl")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: 2 OpenMP threads on 2 shared cores crawl
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def v_folder(tmp_path_factory):
    folder = save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd-v"), seed=6)
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    assert config["prediction_type"] == "epsilon"
    path.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    return str(folder)


@pytest.fixture(scope="module")
def trained(v_folder, tmp_path_factory):
    """Three DKD steps on the v teacher, recording every denoising target the fake loss asks for."""
    out = tmp_path_factory.mktemp("run")
    teacher = load_teacher("tiny-sd", v_folder)
    config = DistillConfig(
        backbone="tiny-sd",
        student=AdapterSpec("tiny-sd", "student", "lorad", rank=4),
        fake=AdapterSpec("tiny-sd", "fake", "lorad", rank=2),
        batch_size=4,
        per_device_batch=2,
        max_steps=3,
        checkpoint_every=100,
        seed=2,
    )
    targets = []
    original = step_module.denoising_target

    def recorded(x0, noise, t, alphas_cumprod, prediction_type):
        target = original(x0, noise, t, alphas_cumprod, prediction_type)
        targets.append((x0.detach().clone(), noise.clone(), t.clone(), prediction_type, target.detach().clone()))
        return target

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step_module, "denoising_target", recorded)
        result = distill(config, teacher, PROMPTS, out / "run", progress=False)
    return teacher, config, result, targets, out


def test_the_fake_model_regresses_v(trained):
    teacher, _, _, targets, _ = trained
    assert teacher.prediction_type == "v_prediction"
    assert len(targets) == 3 * 2  # 3 steps x 2 micro-batches
    reference = DDPMScheduler.from_config(teacher.scheduler.config)
    for x0, noise, t, kind, target in targets:
        assert kind == "v_prediction" and target.dtype == torch.float32
        v = reference.get_velocity(x0.double(), noise.double(), t)  # sqrt(abar) eps - sqrt(1 - abar) x0, float64
        torch.testing.assert_close(target.double(), v, rtol=2**-23, atol=1e-12)  # float32 rounding of v
        assert (target - noise).abs().max() > 0.1  # not the eps target


def test_exported_pipeline_reproduces_the_v_student(trained):
    teacher, config, result, _, out = trained
    student = result.student.eval()
    exported = export_student(student, config.student, teacher, out / "export", t_init=999)
    info = json.loads((exported / "pipeline" / STUDENT_INFO).read_text())
    assert info["prediction_type"] == "v_prediction"
    pipe = OneStepPipeline.from_pretrained(exported / "pipeline")
    assert pipe.teacher.prediction_type == "v_prediction" and pipe.t_init == 999

    prompts, seeds = PROMPTS[:3], [21, 22, 23]
    noise = seeded_noise(seeds, teacher.latent_shape)
    embeds = teacher.encode(prompts)
    with torch.no_grad():
        x0 = generate(teacher, student, noise, embeds, 999)  # the in-memory student's one-step x0
        v_hat = teacher.predict(noise, torch.tensor(999), embeds, denoiser=student).double()
    abar = teacher.alphas_cumprod.double()[999]
    by_hand = abar.sqrt() * noise.double() - (1 - abar).sqrt() * v_hat  # x0 of a v model at t = 999
    as_eps = (noise.double() - (1 - abar).sqrt() * v_hat) / abar.sqrt()  # the same output read as eps
    torch.testing.assert_close(x0.double(), by_hand, rtol=1e-6, atol=1e-6)
    assert (x0.double() - as_eps).abs().max() > 1.0

    # LoRaD merges exactly the rotated weight its forward uses: the exported latents are x0 itself
    torch.testing.assert_close(pipe.latents(prompts, seeds), x0, rtol=0, atol=0)
    images = pipe(prompts, seeds)
    expected = to_pil(teacher.decode(x0))
    assert [a.tobytes() for a in images] == [b.tobytes() for b in expected]
