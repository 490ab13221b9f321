"""The toy backbone: a pixel-space teacher loaded through the common code path; the shipped
teacher works (CFG samples are the prompted digits); its training reduces the denoising loss."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dkd.backbones import load_teacher
from dkd.sampling import MultiStepPipeline, OneStepPipeline
from dkd.toy.backbone import load_toy_unet, save_toy_backbone, text_encoder_digest, toy_text_encoder
from dkd.toy.data import labels_of, prompt_list
from dkd.toy.evaluator import ClassifierConfig, train_classifier
from dkd.toy.teach import ToyTeacherConfig, train_teacher

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "toy" / "teacher.safetensors"


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    return save_toy_backbone(tmp_path_factory.mktemp("toy"), load_toy_unet(SHIPPED))


def test_pixel_space_teacher_loads_without_a_vae(toy_folder):
    teacher = load_teacher("toy", str(toy_folder))
    assert teacher.vae is None and not (Path(toy_folder) / "vae").exists()
    assert teacher.latent_shape == (1, 8, 8)
    x = torch.rand(2, 1, 8, 8) * 4 - 2
    assert torch.equal(teacher.decode(x), x.clamp(-1, 1))  # the samples are the images
    images = OneStepPipeline(teacher)(["the number 3", "handwritten 5"], [0, 1])
    assert [(im.mode, im.size) for im in images] == [("L", (8, 8))] * 2


def test_text_encoder_is_rebuilt_identically_and_checked(tmp_path):
    assert text_encoder_digest(toy_text_encoder()) == text_encoder_digest(toy_text_encoder())
    state = load_file(str(SHIPPED))
    save_file(state, str(tmp_path / "other.safetensors"), metadata={"text_encoder_sha256": "0" * 64})
    with pytest.raises(ValueError, match="retrain the toy teacher"):
        load_toy_unet(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="toy_teacher_weights"):
        load_toy_unet(tmp_path / "missing.safetensors")


def test_shipped_teacher_draws_the_prompted_digits(toy_folder):
    """The issue's bar for the teacher (25 steps with CFG: accuracy >= 90%), on 60 prompts."""
    classifier = train_classifier(ClassifierConfig(epochs=8))
    prompts = prompt_list(60, seed=7)
    sampler = MultiStepPipeline(load_teacher("toy", str(toy_folder)), steps=25, guidance_scale=3.0)
    images = sampler.latents(prompts, list(range(60))).clamp(-1, 1)
    accuracy = (classifier(images).argmax(1) == labels_of(prompts)).float().mean().item()
    assert accuracy >= 0.9


def test_teacher_training_reduces_the_denoising_loss(tmp_path):
    from dkd.backbones.tiny import write_clip_tokenizer

    config = ToyTeacherConfig(steps=200, batch_size=8, warmup_steps=10)
    _, rows = train_teacher(config, write_clip_tokenizer(tmp_path, max_length=16), progress=False)
    assert [row["step"] for row in rows] == [100, 200]
    # predicting zero noise scores E[eps^2] = 1; the loss falls well below it and keeps falling
    assert rows[0]["loss"] < 0.5 and rows[1]["loss"] < rows[0]["loss"]
    with pytest.raises(ValueError, match="unknown toy teacher settings"):
        ToyTeacherConfig.from_dict({"stesp": 3})
