"""Loading teachers: tiny pipeline folders through the real code path, offline, and errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from dkd.backbones import BackboneNotFoundError, load_teacher, resolve_source
from dkd.backbones.tiny import save_tiny_backbone


@pytest.fixture(scope="module", params=["sd", "pixart"])
def tiny_folder(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    return request.param, save_tiny_backbone(request.param, folder, seed=3)


def test_tokenizer_equals_open_clip(tmp_path):
    import open_clip

    from dkd.backbones.tiny import write_clip_tokenizer

    tokenizer = write_clip_tokenizer(tmp_path)
    prompt = "A corgi wearing sunglasses, 4k, highly-detailed oil painting!"
    ours = tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    reference = open_clip.tokenize([prompt])[0]
    n = int((reference != 0).sum())
    assert ours[:n].tolist() == reference[:n].tolist()
    assert (ours[n:] == tokenizer.pad_token_id).all()


def test_load_teacher_from_folder_reproduces_the_saved_models(tiny_folder):
    family, folder = tiny_folder
    name = f"tiny-{family}"
    teacher = load_teacher(name, str(folder))
    sub = "unet" if family == "sd" else "transformer"
    import diffusers

    direct = getattr(diffusers, teacher.spec.denoiser_class).from_pretrained(folder / sub)
    for (n, p), (_, q) in zip(teacher.denoiser.named_parameters(), direct.named_parameters()):
        assert torch.equal(p, q), n
    assert not any(p.requires_grad for p in teacher.denoiser.parameters())
    assert teacher.prediction_type == "epsilon" and teacher.latent_shape == (4, 8, 8)
    embeds = teacher.encode(["a photo of a cat", ""])
    assert embeds.hidden_states.shape[:2] == (2, teacher.spec.text_max_length)
    assert (embeds.attention_mask is None) == (family == "sd")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    out = teacher.predict(x, t, embeds)
    with torch.no_grad():
        if family == "sd":
            raw = direct(x, t, encoder_hidden_states=embeds.hidden_states).sample
        else:
            raw = direct(
                x,
                encoder_hidden_states=embeds.hidden_states,
                encoder_attention_mask=embeds.attention_mask,
                timestep=t,
                added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            ).sample
            assert raw.shape[1] == 8  # eps and learned variance
    torch.testing.assert_close(out, raw[:, :4], rtol=0, atol=0)
    assert teacher.decode(x).shape == (2, 3, 16, 16)


def test_pixart_mask_hides_padding(tmp_path):
    teacher = load_teacher("tiny-pixart", str(save_tiny_backbone("pixart", tmp_path)))
    embeds = teacher.encode(["a cat"])
    real = int(embeds.attention_mask.sum())
    noisy = type(embeds)(embeds.hidden_states.clone(), embeds.attention_mask)
    noisy.hidden_states[:, real:] += 10.0
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    torch.testing.assert_close(teacher.predict(x, t, noisy), teacher.predict(x, t, embeds), rtol=1e-5, atol=1e-5)


def test_folder_layout_is_a_real_diffusers_pipeline(tmp_path):
    """(PixArtAlphaPipeline insists on a T5 tokenizer, which needs a download: SD only.)"""
    from diffusers import StableDiffusionPipeline

    folder = save_tiny_backbone("sd", tmp_path)
    assert StableDiffusionPipeline.from_pretrained(folder).unet.config.sample_size == 8


def test_dtype_and_prediction_type_come_from_the_folder(tmp_path):
    folder = save_tiny_backbone("sd", tmp_path / "sd")
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    config["prediction_type"] = "v_prediction"
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    teacher = load_teacher("tiny-sd", str(folder), dtype=torch.bfloat16, text=False, vae=False)
    assert teacher.prediction_type == "v_prediction"
    assert teacher.denoiser.dtype == torch.bfloat16 and teacher.text_encoder is None


def test_clear_errors(tmp_path):
    with pytest.raises(BackboneNotFoundError, match="No diffusers folder .*does-not-exist"):
        load_teacher("sd15", str(tmp_path / "does-not-exist"))
    with pytest.raises(BackboneNotFoundError, match="has no hub id"):
        resolve_source("tiny-sd", None)
    with pytest.raises(ValueError, match="Unknown backbone"):
        resolve_source("sd3", None)
    folder = save_tiny_backbone("sd", tmp_path / "no-vae")
    shutil.rmtree(folder / "vae")
    with pytest.raises(BackboneNotFoundError, match="VAE .*'vae/'"):
        load_teacher("tiny-sd", str(folder))
    assert load_teacher("tiny-sd", str(folder), vae=False).vae is None


def test_offline_local_folder_works_and_hub_id_fails_clearly(tmp_path):
    folder = save_tiny_backbone("sd", tmp_path / "sd")
    script = textwrap.dedent(f"""
        from dkd.backbones import BackboneNotFoundError, load_teacher
        teacher = load_teacher("tiny-sd", {str(folder)!r})
        print("local ok", teacher.encode(["a cat"]).hidden_states.shape[1])
        try:
            load_teacher("sd15", text=False, vae=False)
        except BackboneNotFoundError as err:
            print("hub error:", err)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "local ok 77" in run.stdout
    assert (
        "hub error: Cannot load the denoiser of 'sd15' from hub id 'stable-diffusion-v1-5/stable-diffusion-v1-5'"
        in run.stdout
        and "HF_HUB_OFFLINE=1" in run.stdout
    )
