"""Fig. 2c/d: a one-step model given its teacher's norms or directions (dkd.analysis.swap), row by row."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dkd.analysis.swap import replace_part, swap_student
from dkd.analysis.weights import layer_kind
from dkd.backbones import load_denoiser
from dkd.backbones.tiny import save_tiny_backbone
from dkd.sampling.pipeline import STUDENT_INFO


def _rows(weight):
    rows = weight.detach().reshape(weight.shape[0], -1).double()
    norms = rows.norm(dim=1)
    return norms, rows / norms[:, None]


def _check(swapped, one_step, teacher, part, include_conv=False):
    for name, weight in one_step.items():
        if not layer_kind(name, weight, include_conv):
            assert swapped[name] is weight, name  # biases, norms, embeddings (and convs) stay the one-step model's
            continue
        assert swapped[name].dtype == weight.dtype and swapped[name].shape == weight.shape
        (n_s, v_s), (n_o, v_o), (n_t, v_t) = _rows(swapped[name]), _rows(weight), _rows(teacher[name])
        norms, directions = (n_t, v_o) if part == "norms" else (n_o, v_t)
        torch.testing.assert_close(n_s, norms, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(v_s, directions, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    return [save_tiny_backbone("sd", root / f"seed{seed}", seed=seed) for seed in (1, 2)]


@pytest.mark.parametrize("part", ["norms", "directions"])
@pytest.mark.parametrize("include_conv", [False, True])
def test_replace_part_takes_exactly_that_part_from_the_teacher(models, part, include_conv):
    teacher, one_step = (load_denoiser("tiny-sd", str(m)).state_dict() for m in models)
    swapped = replace_part(one_step, teacher, part, include_conv=include_conv)
    assert list(swapped) == list(one_step)
    _check(swapped, one_step, teacher, part, include_conv)
    convs = [n for n, w in one_step.items() if layer_kind(n, w, True) == "conv"]
    assert convs and all((swapped[n] is one_step[n]) != include_conv for n in convs)


def test_an_unknown_part_is_one_clear_error(models):
    state = load_denoiser("tiny-sd", str(models[0])).state_dict()
    with pytest.raises(ValueError, match="part must be one of"):
        replace_part(state, state, "angles")


@pytest.mark.parametrize("part", ["norms", "directions"])
def test_swap_student_writes_a_loadable_student_with_the_swap_recorded(models, tmp_path, part):
    student = shutil.copytree(models[1], tmp_path / "student")
    info = {"backbone": "tiny-sd", "t_init": 999, "scaled_input": False, "prediction_type": "epsilon"}
    (student / STUDENT_INFO).write_text(json.dumps({**info, "method": "ft"}))
    out = swap_student(student, models[0], tmp_path / "swapped", part=part)
    swapped = load_denoiser("tiny-sd", str(out)).state_dict()
    one_step, teacher = (load_denoiser("tiny-sd", str(m)).state_dict() for m in (student, models[0]))
    for name in one_step:
        if not layer_kind(name, one_step[name]):
            assert torch.equal(swapped[name], one_step[name]), name
    _check({n: swapped[n] if layer_kind(n, w) else w for n, w in one_step.items()}, one_step, teacher, part)
    recorded = json.loads((out / STUDENT_INFO).read_text())
    assert recorded["t_init"] == 999 and recorded["swap"]["teacher_part"] == part and (out / "vae").is_dir()
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="not an exported student"):
        swap_student(tmp_path / "plain", models[0], tmp_path / "bad", part=part)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("part", ["norms", "directions"])
def test_a_swapped_published_checkpoint_samples_its_card_with_the_swapped_denoiser(models, tmp_path, part):
    """tnorm-/tdir-pub-<name>: the checkpoint as its card builds it (here a LoRA fused at 0.5) with the teacher's
    part, written as a denoiser folder that make_sampler loads in place of the card's U-Net and LoRA."""
    import textwrap

    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from dkd.analysis.swap import swap_published
    from dkd.sampling import make_sampler, published_spec
    from dkd.sampling.samplers import DiffusersSampler

    unet = load_denoiser("tiny-sd", str(models[1]))
    torch.manual_seed(3)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False))
    lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=lora)
    catalog = tmp_path / "published.yaml"
    catalog.write_text(
        textwrap.dedent(f"""\
        models:
          tiny-lora:
            backbone: sd15
            provenance: official
            rows: [{{table: "1 (COCO2014 30k)", method: Hyper-SD}}]
            base: {models[1]}
            adapter: {{repo: {tmp_path / "lora"}, file: pytorch_lora_weights.safetensors, scale: 0.5}}
            scheduler: TCDScheduler
            steps: 1
            eta: 1.0
            guidance_scale: 0.0
            resolution: 16
            reference: https://huggingface.co/ByteDance/Hyper-SD
        """)
    )
    spec = published_spec("sd15", "pub-tiny-lora", str(catalog))
    out = swap_published(spec, models[0], tmp_path / "denoiser", backbone="sd15", part=part)
    fused = DiffusersSampler(spec).pipe.unet.state_dict()
    teacher = load_denoiser("tiny-sd", str(models[0])).state_dict()
    model = {"norms": "tnorm", "directions": "tdir"}[part] + "-pub-tiny-lora"
    sampler = make_sampler("sd15", model, source=str(out), catalog=str(catalog))
    swapped = sampler.pipe.unet.state_dict()
    assert not [k for k in swapped if "lora" in k] and sampler.spec.adapter is None
    assert sampler.spec.scheduler == "TCDScheduler" and sampler.spec.eta == 1.0  # the card's sampling
    _check({n: swapped[n] if layer_kind(n, w) else w for n, w in fused.items()}, fused, teacher, part)
    assert all(torch.equal(swapped[n], w) for n, w in fused.items() if not layer_kind(n, w))
    assert [im.size for im in sampler(["a cat"], [1])] == [(16, 16)]
