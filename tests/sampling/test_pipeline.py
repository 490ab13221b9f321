"""Exported students: the pipeline folder and the adapter reproduce the in-memory student."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from peft import PeftModel

from dkd.adapters import AdapterSpec
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.sampling import OneStepPipeline, seeded_noise
from dkd.train.config import DistillConfig
from dkd.train.export import export_student
from dkd.train.loop import distill
from dkd.train.objective import ObjectiveConfig
from dkd.train.step import generate

PROMPTS = [f"a handwritten digit {d}" for d in range(8)]


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    return str(save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=4))


@pytest.fixture(scope="module")
def pixart_folder(tmp_path_factory):
    return str(save_tiny_backbone("pixart", tmp_path_factory.mktemp("tiny-pixart"), seed=4))


FAKES = {"swiftbrush": {"method": "lora", "targets": ("to_q", "to_v"), "alpha": 3}, "sid_lsg": {"method": "ft"}}


def _trained(teacher_folder, out, method, backbone="tiny-sd", objective="dkd"):
    teacher = load_teacher(backbone, teacher_folder)
    fake = {"method": "lorad", "rank": 2, **FAKES.get(objective, {})}
    config = DistillConfig(
        backbone=backbone,
        student=AdapterSpec(backbone, "student", method, rank=4),
        fake=AdapterSpec(backbone, "fake", **fake),
        objective=ObjectiveConfig.named(objective),
        batch_size=4,
        per_device_batch=4,
        max_steps=2,
        checkpoint_every=10,
        seed=1,
    )
    result = distill(config, teacher, PROMPTS, out / "run", progress=False)
    o = config.objective
    exported = export_student(
        result.student, config.student, teacher, out / "export", t_init=o.t_init, scaled_input=o.scaled_input
    )
    return teacher, result.student.eval(), exported


@pytest.mark.parametrize(
    "method,objective", [("lorad", "dkd"), ("ft", "dkd"), ("lora", "dkd"), ("ft", "sid_lsg"), ("ft", "swiftbrush")]
)
def test_exported_pipeline_reproduces_the_in_memory_student(teacher_folder, tmp_path, method, objective):
    """Each objective's student, exported: the folder's pipeline generates what the student did in
    memory, from the generator input it was trained with (SiD-LSG: sigma_625 z at t = 625)."""
    teacher, student, exported = _trained(teacher_folder, tmp_path, method, objective=objective)
    prompts, seeds = PROMPTS[:3], [11, 12, 13]
    o = ObjectiveConfig.named(objective)
    with torch.no_grad():
        noise, embeds = seeded_noise(seeds, teacher.latent_shape), teacher.encode(prompts)
        expected = generate(teacher, student, noise, embeds, o.t_init, o.scaled_input)
    pipe = OneStepPipeline.from_pretrained(exported / "pipeline")
    got = pipe.latents(prompts, seeds)
    if method == "lora":  # merged W + BA vs x W^T + (x A^T) B^T: equal up to float rounding
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:  # LoRaD merges exactly the rotated weight its forward uses; FT has nothing to merge
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    images = pipe(prompts, seeds, batch_size=2)
    assert [im.size for im in images] == [(16, 16)] * 3
    alone = pipe(prompts[2:], seeds[2:])[0]
    assert alone.tobytes() == images[2].tobytes()  # an image does not depend on its batch
    assert (exported / "adapter").is_dir() == (method != "ft")


def test_exported_pixart_pipeline_reproduces_the_in_memory_student(pixart_folder, tmp_path):
    """PixArt-α (T5 prompts with their attention mask, 8-channel output of which eps is the first 4):
    the exported folder gives the in-memory LoRaD student's latents exactly, and loads in diffusers'
    PixArtAlphaPipeline."""
    from diffusers import PixArtAlphaPipeline

    teacher, student, exported = _trained(pixart_folder, tmp_path, "lorad", backbone="tiny-pixart")
    prompts, seeds = PROMPTS[:3], [11, 12, 13]
    with torch.no_grad():
        expected = generate(teacher, student, seeded_noise(seeds, teacher.latent_shape), teacher.encode(prompts))
    pipe = OneStepPipeline.from_pretrained(exported / "pipeline")
    torch.testing.assert_close(pipe.latents(prompts, seeds), expected, rtol=0, atol=0)
    assert not torch.equal(
        expected,
        generate(teacher, teacher.denoiser, seeded_noise(seeds, teacher.latent_shape), teacher.encode(prompts)),
    )  # the student moved away from the teacher
    loaded = PixArtAlphaPipeline.from_pretrained(exported / "pipeline")
    merged = dict(pipe.teacher.denoiser.named_parameters())
    assert all(torch.equal(merged[n], p) for n, p in loaded.transformer.named_parameters())


def test_adapter_folder_loads_with_peft(teacher_folder, tmp_path):
    teacher, student, exported = _trained(teacher_folder, tmp_path, "lorad")
    loaded = PeftModel.from_pretrained(copy.deepcopy(teacher.denoiser), exported / "adapter").eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    embeds = teacher.encode(PROMPTS[:2])
    with torch.no_grad():
        torch.testing.assert_close(
            teacher.predict(x, t, embeds, denoiser=loaded),
            teacher.predict(x, t, embeds, denoiser=student),
            rtol=0,
            atol=0,
        )


def test_exported_folder_is_a_diffusers_pipeline(teacher_folder, tmp_path):
    from diffusers import StableDiffusionPipeline

    _, _, exported = _trained(teacher_folder, tmp_path, "lorad")
    assert StableDiffusionPipeline.from_pretrained(exported / "pipeline").unet.config.sample_size == 8


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "EulerDiscreteScheduler"])
def test_multistep_pipeline_equals_diffusers_stable_diffusion(teacher_folder, scheduler):
    """MultiStepPipeline (our Teacher, any diffusers scheduler, CFG with the empty prompt) gives the
    images of diffusers' StableDiffusionPipeline with the same scheduler, steps, CFG and seeds."""
    from dkd.sampling import DiffusersSampler, MultiStepPipeline, MultiStepSpec

    prompts, seeds = PROMPTS[:3], [5, 6, 7]
    ours = MultiStepPipeline(load_teacher("tiny-sd", teacher_folder), steps=4, guidance_scale=3.0, scheduler=scheduler)
    reference = DiffusersSampler(MultiStepSpec(teacher_folder, steps=4, guidance_scale=3.0, scheduler=scheduler))
    for a, b in zip(ours(prompts, seeds), reference(prompts, seeds)):
        difference = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
        assert difference.max() <= 1  # 8-bit rounding of float32 results computed in another order


def test_multistep_pipeline_checks_its_settings(teacher_folder):
    from dkd.sampling import MultiStepPipeline

    teacher = load_teacher("tiny-sd", teacher_folder)
    with pytest.raises(ValueError, match="no scheduler"):
        MultiStepPipeline(teacher, scheduler="NoSuchScheduler")
    with pytest.raises(ValueError, match="steps"):
        MultiStepPipeline(teacher, steps=0)
    with pytest.raises(ValueError, match="seeds"):
        MultiStepPipeline(teacher, steps=1)(PROMPTS[:2], [1])


def test_sample_command_writes_the_pipelines_images_with_a_seed_per_index(
    teacher_folder, tmp_path, capsys, monkeypatch
):
    """`python -m dkd sample`: prompts from --prompt and a file, image i from seed SEED + i, equal to
    the pipeline's own images; a second call finds them done; bad input is one error line."""
    from PIL import Image

    from dkd.__main__ import main

    _, _, exported = _trained(teacher_folder, tmp_path, "lorad")
    (tmp_path / "prompts.txt").write_text(f"{PROMPTS[1]}\n\n{PROMPTS[2]}\n")
    out = tmp_path / "samples"
    command = [
        "sample",
        str(exported / "pipeline"),
        "--prompt",
        PROMPTS[0],
        "--prompts",
        str(tmp_path / "prompts.txt"),
        "--out",
        str(out),
        "--seed",
        "5",
        "--batch-size",
        "2",
    ]
    assert main(command) == 0
    expected = OneStepPipeline.from_pretrained(exported / "pipeline")(PROMPTS[:3], [5, 6, 7])
    got = [Image.open(out / f"{i:05d}.png") for i in range(3)]
    assert [im.tobytes() for im in got] == [im.tobytes() for im in expected]
    index = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert index == [{"image": f"{i:05d}.png", "prompt": PROMPTS[i], "seed": 5 + i} for i in range(3)]
    assert "3 image(s) written" in capsys.readouterr().err
    assert main(command) == 0 and "0 image(s) written, 3 already there" in capsys.readouterr().err

    for bad, message in [
        (["sample", str(tmp_path / "missing"), "--prompt", "x", "--out", str(out)], "no such folder"),
        (["sample", str(exported / "pipeline"), "--out", str(out)], "no prompt"),
        ([*command, "--batch-size", "0"], "--batch-size"),
    ]:
        assert main(bad) == 2
        assert message in capsys.readouterr().err

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the folder was checked")

    monkeypatch.setattr(OneStepPipeline, "from_pretrained", load)  # a refused folder costs no model load
    assert main([*command, "--seed", "6"]) == 2
    assert "holds the images of other prompts or seeds" in capsys.readouterr().err
