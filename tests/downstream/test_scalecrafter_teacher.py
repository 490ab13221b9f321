"""The multi-step teacher as ScaleCrafter samples it: against diffusers' StableDiffusionPipeline (DDIM, CFG,
eta 0 and 1) run inside the re-dilation by hand, and the per-step dilation of every U-Net call against
ScaleCrafter's schedule written out (tau, progressive decay, noise-damped CFG's second pass)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from dkd.backbones import load_teacher
from dkd.backbones.tiny import TINY_UNET_CONFIG, save_tiny_backbone
from dkd.downstream.scalecrafter.redilation import HighResSpec, redilated, scalecrafter_factors
from dkd.downstream.scalecrafter.teacher import ReDilationSchedule, ScaleCrafterTeacher, step_factors
from dkd.sampling import seeded_noise

PROMPTS = ["a red square", "a cat"]
SEEDS = [3, 4]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=4))


@pytest.fixture(scope="module")
def teacher(folder):
    return load_teacher("tiny-sd", folder)


@pytest.fixture(scope="module")
def reference(folder):
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_step_factors_follow_scalecrafters_rule():
    factors = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.5}
    assert step_factors(factors, 0, 35, False) == factors and step_factors(factors, 34, 35, False) == factors
    assert step_factors(factors, 35, 35, False) == {} == step_factors(factors, 0, 0, True)
    # max(ceil(f (35 - i) / 35), 2): 4 -> 4, 3, 2; 3 -> 3, 2; 2 stays 2; 1.5 (below 2) kept
    assert step_factors(factors, 0, 35, True) == factors
    assert step_factors(factors, 9, 35, True) == {"a": 3.0, "b": 3.0, "c": 2.0, "d": 1.5}  # 4 * 26/35 = 2.97
    assert step_factors(factors, 12, 35, True) == {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.5}  # 3 * 23/35 = 1.97
    assert step_factors(factors, 18, 35, True) == {"a": 2.0, "b": 2.0, "c": 2.0, "d": 1.5}  # 4 * 17/35 = 1.94
    for bad in ((factors, -1, 3, True), (factors, 0, 1.5, True)):
        with pytest.raises(ValueError):
            step_factors(*bad)
    for bad in ({"dilate_tau": -1}, {"dilate_tau": 1, "ndcfg_tau": 2.0}, {"dilate_tau": 1, "progressive": 1}):
        with pytest.raises(ValueError):
            ReDilationSchedule(**bad)


@pytest.mark.parametrize("redilate", [False, True])
def test_the_teacher_equals_diffusers_inside_the_redilation(teacher, reference, redilate):
    """dilate_tau = steps (every step re-dilated), eta 0: diffusers' pipeline at 32x32 called inside
    ``redilated`` (factors on its own U-Net) gives the same latents; without re-dilation, plainly."""
    spec = HighResSpec(32, 32, redilate=redilate)
    ours = ScaleCrafterTeacher(teacher, spec, ReDilationSchedule(dilate_tau=4), steps=4, guidance_scale=7.5)
    got = ours.latents(PROMPTS, SEEDS)
    factors = scalecrafter_factors(reference.unet, 2.0) if redilate else {}
    with redilated(reference.unet, factors):
        expected = reference(
            PROMPTS, height=32, width=32, num_inference_steps=4, guidance_scale=7.5, eta=0.0,
            latents=seeded_noise(SEEDS, (4, 16, 16)), output_type="latent",
        ).images  # fmt: skip
    assert got.shape == (2, 4, 16, 16)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_stochastic_ddim_draws_each_images_noise_from_its_seed(teacher, reference):
    """eta 1: the step noise of one image comes from its seed's generator after its starting noise, as in
    diffusers' pipeline given that generator; an image does not depend on its batch."""
    spec = HighResSpec(32, 32, redilate=False)
    ours = ScaleCrafterTeacher(teacher, spec, ReDilationSchedule(0), steps=4, guidance_scale=7.5, eta=1.0)
    both = ours.latents(PROMPTS, SEEDS)
    generator = torch.Generator().manual_seed(SEEDS[1])
    noise = torch.randn((1, 4, 16, 16), generator=generator)
    expected = reference(
        PROMPTS[1:], height=32, width=32, num_inference_steps=4, guidance_scale=7.5, eta=1.0, latents=noise,
        generator=generator, output_type="latent",
    ).images  # fmt: skip
    torch.testing.assert_close(both[1:], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.latents(PROMPTS[1:], SEEDS[1:]), both[1:], rtol=1e-4, atol=1e-4)  # batch order only
    deterministic = ScaleCrafterTeacher(teacher, spec, ReDilationSchedule(0), steps=4, guidance_scale=7.5)
    assert not torch.allclose(deterministic.latents(PROMPTS, SEEDS), both)


def _three_levels(teacher):
    """The tiny teacher with a 3-level U-Net (depths 0, 1, 2: two re-dilated levels at 4x)."""
    torch.manual_seed(0)
    config = {**TINY_UNET_CONFIG, "block_out_channels": [16, 16, 32]}
    config["down_block_types"] = ["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]
    config["up_block_types"] = ["UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"]
    return type(teacher)(teacher.spec, UNet2DConditionModel(**config).eval(), teacher.scheduler,
                         teacher.text_encoder, teacher.tokenizer, teacher.vae)  # fmt: skip


def test_each_unet_call_has_the_dilation_of_its_step(teacher):
    """4 steps at 4x (64 px): dilate_tau 3, progressive, noise-damped CFG for 2 steps. Factors: depth 1 -> 2,
    depth 2 -> 3. Main pass (2B rows): depth 2 at max(ceil(3 (3 - i) / 3), 2) = 3, 2, 2, then plain.
    Noise-damped pass (B rows, unconditional): depth 1 plain, depth 2 at max(ceil(3 (2 - i) / 2), 2) = 3, 2."""
    model = _three_levels(teacher)
    unet = model.denoiser
    shallow, deep = unet.down_blocks[1].resnets[0].conv1, unet.down_blocks[2].resnets[0].conv1
    calls = []
    handle = unet.register_forward_pre_hook(
        lambda m, a: calls.append((a[0].shape[0], shallow.dilation[0], deep.dilation[0]))
    )
    before = [sorted(vars(block)) for block in unet.up_blocks]
    spec = HighResSpec(64, 64, freeu=True)
    schedule = ReDilationSchedule(dilate_tau=3, ndcfg_tau=2, progressive=True)
    sampler = ScaleCrafterTeacher(model, spec, schedule, steps=4, guidance_scale=7.5)
    try:
        out = sampler.latents(PROMPTS, SEEDS)
    finally:
        handle.remove()
    assert out.shape == (2, 4, 32, 32)
    assert calls == [(4, 2, 3), (2, 1, 3), (4, 2, 2), (2, 1, 2), (4, 2, 2), (4, 1, 1)]
    assert sum(batch for batch, _, _ in calls) == sampler.unet_rows_per_image * len(PROMPTS) == 20
    assert shallow.dilation == deep.dilation == (1, 1) and [sorted(vars(b)) for b in unet.up_blocks] == before


def test_the_teacher_checks_its_settings(teacher):
    spec = HighResSpec(32, 32)
    with pytest.raises(ValueError, match="exceed"):
        ScaleCrafterTeacher(teacher, spec, ReDilationSchedule(5), steps=4)
    with pytest.raises(ValueError, match="eta"):
        ScaleCrafterTeacher(teacher, spec, ReDilationSchedule(1), steps=4, eta=1.5)
    with pytest.raises(ValueError, match="eta"):
        ScaleCrafterTeacher(teacher, spec, ReDilationSchedule(1), steps=4, eta=1.0, scheduler="EulerDiscreteScheduler")
    with pytest.raises(ValueError, match="guidance"):
        ScaleCrafterTeacher(teacher, spec, ReDilationSchedule(1, ndcfg_tau=1), steps=4, guidance_scale=1.0)
