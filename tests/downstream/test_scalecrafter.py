"""ScaleCrafter's re-dilation and FreeU around the one-step student: each re-dilated conv against
F.conv2d (and F.interpolate) called by hand, the U-Net restored exactly, the SD1.5 layer choice against
the rule written out, and a one-step generation at twice the tiny backbone's resolution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dkd.backbones import load_teacher
from dkd.backbones.specs import build_denoiser
from dkd.backbones.tiny import save_tiny_backbone, tiny_unet
from dkd.downstream.scalecrafter.redilation import (
    HighResSpec,
    ReDilation,
    freeu,
    high_res_latents,
    one_step_high_res,
    redilated,
    scalecrafter_factors,
)
from dkd.sampling import OneStepPipeline

PROMPTS = ["a handwritten digit 3", "a red square", "a cat"]
SEEDS = [5, 6, 7]


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return tiny_unet().eval()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=4)
    return OneStepPipeline(load_teacher("tiny-sd", str(folder)))


def _run(unet, x=None):
    """The tiny U-Net at t = 999 on a fixed 8x8 latent and prompt embedding."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g) if x is None else x
    hidden = torch.randn(2, 3, 16, generator=g)
    with torch.no_grad():
        return unet(x, torch.full((2,), 999), encoder_hidden_states=hidden).sample


def _conv(kernel=3, stride=1, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 5, kernel, stride=stride, padding=(kernel - 1) // 2))


def _snapshot(model: nn.Module) -> dict:
    """Everything re-dilation may touch, per module: attribute names, dilation, padding, hooks, weights."""
    return {
        name: (
            sorted(vars(m)),
            getattr(m, "dilation", None),
            getattr(m, "padding", None),
            len(m._forward_hooks) + len(m._forward_pre_hooks),
            {k: v.clone() for k, v in m.state_dict(keep_vars=False).items()} if not list(m.children()) else {},
        )
        for name, m in model.named_modules()
    }


def _assert_same(before: dict, after: dict):
    assert before.keys() == after.keys()
    for name, (keys, dilation, padding, hooks, weights) in before.items():
        keys2, dilation2, padding2, hooks2, weights2 = after[name]
        assert (keys, dilation, padding, hooks) == (keys2, dilation2, padding2, hooks2), name
        assert weights.keys() == weights2.keys() and all(torch.equal(weights[k], weights2[k]) for k in weights)


# ----------------------------------------------------------------------------------------- single convs


def test_factor_one_is_the_identity(unet):
    x = torch.randn(2, 3, 9, 7)
    model = _conv()
    plain = model(x)
    with redilated(model, {"0": 1.0}):
        assert model[0].dilation == (1, 1) and not model[0]._forward_pre_hooks
        torch.testing.assert_close(model(x), plain, rtol=0, atol=0)
    every = {name: 1.0 for name, m in unet.named_modules() if isinstance(m, nn.Conv2d)}
    reference = _run(unet)
    with redilated(unet, every):
        torch.testing.assert_close(_run(unet), reference, rtol=0, atol=0)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel,d", [(3, 2), (3, 3), (5, 2)])
def test_integer_factor_is_a_dilated_conv(stride, kernel, d):
    """F.conv2d with dilation d and padding d (k - 1) // 2, stride kept: the plain conv's output size,
    also for a stride-2 conv (a downsampler) on an odd input size."""
    model, x = _conv(kernel, stride), torch.randn(2, 3, 13, 10)
    conv = model[0]
    plain = model(x)
    expected = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=d * (kernel - 1) // 2, dilation=d)
    with redilated(model, ReDilation({"0": float(d)})):
        got = model(x)
    assert got.shape == plain.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.allclose(got, plain)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("factor", [1.5, 2.5])
def test_fractional_factor_resizes_around_the_dilated_conv(stride, factor):
    """d = ceil(f): bilinear resize by d / f, the d-dilated conv, bilinear resize back to the plain size."""
    model, x = _conv(3, stride), torch.randn(2, 3, 12, 10)
    conv = model[0]
    plain = model(x)
    d = math.ceil(factor)
    resized = F.interpolate(x, scale_factor=d / factor, mode="bilinear", align_corners=False)
    assert resized.shape[-2:] != x.shape[-2:]
    dilated = F.conv2d(resized, conv.weight, conv.bias, stride=stride, padding=d, dilation=d)
    expected = F.interpolate(dilated, size=plain.shape[-2:], mode="bilinear", align_corners=False)
    with redilated(model, {"0": factor}):
        got = model(x)
    assert got.shape == plain.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with redilated(model, {"0": float(d)}):  # not the same as the integer dilation ceil(f)
        assert not torch.allclose(got, model(x))


# ------------------------------------------------------------------------------------------- the U-Net


def test_modules_are_restored_on_exit_and_after_an_exception(unet):
    factors = {"mid_block.resnets.0.conv1": 2.0, "up_blocks.0.resnets.1.conv2": 1.5, "conv_in": 1.0}
    before, reference = _snapshot(unet), _run(unet)
    with redilated(unet, factors):
        assert unet.mid_block.resnets[0].conv1.dilation == (2, 2)
        assert len(unet.up_blocks[0].resnets[1].conv2._forward_hooks) == 1
        assert not torch.equal(_run(unet), reference)
    _assert_same(before, _snapshot(unet))
    with pytest.raises(RuntimeError, match="inside"), redilated(unet, factors):
        raise RuntimeError("raised inside the context")
    _assert_same(before, _snapshot(unet))
    torch.testing.assert_close(_run(unet), reference, rtol=0, atol=0)


def test_only_the_named_modules_change(unet):
    reference = _run(unet)
    name = "down_blocks.1.resnets.0.conv1"
    dilations = {n: m.dilation for n, m in unet.named_modules() if isinstance(m, nn.Conv2d)}
    with redilated(unet, {name: 2.0}):
        changed = {n for n, m in unet.named_modules() if isinstance(m, nn.Conv2d) and m.dilation != dilations[n]}
        assert changed == {name}
        assert not torch.equal(_run(unet), reference)
    with redilated(unet, {"conv_in": 1.0, "down_blocks.0.attentions.0.proj_in": 1.0}):
        torch.testing.assert_close(_run(unet), reference, rtol=0, atol=0)


def test_a_redilated_downsampler_keeps_its_output_size(unet):
    """The stride-2 conv of down_blocks.0 at dilation 2: F.conv2d by hand, halved size as before."""
    conv = unet.down_blocks[0].downsamplers[0].conv
    x = torch.randn(1, conv.in_channels, 8, 8)
    expected = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=2, dilation=2)
    with torch.no_grad(), redilated(unet, {"down_blocks.0.downsamplers.0.conv": 2}):
        got = conv(x)
    assert got.shape[-2:] == (4, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_bad_names_and_convs_are_refused_before_anything_changes(unet):
    before = _snapshot(unet)
    with (
        pytest.raises(ValueError, match=r"nope.*down_blocks\.7\.conv"),
        redilated(unet, {"nope": 2.0, "down_blocks.7.conv": 2.0, "conv_in": 2.0}),
    ):
        pass
    with pytest.raises(ValueError, match="nn.Conv2d"), redilated(unet, {"time_embedding.linear_1": 2.0}):
        pass
    with (
        pytest.raises(ValueError, match="1x1"),
        redilated(unet, {"conv_in": 2.0, "up_blocks.0.resnets.0.conv_shortcut": 2}),
    ):
        pass
    _assert_same(before, _snapshot(unet))
    with redilated(unet, {"up_blocks.0.resnets.0.conv_shortcut": 1.0}):  # factor 1: untouched, allowed
        pass
    for bad in ({"conv_in": 0.5}, {"conv_in": float("nan")}, {"conv_in": True}, {"": 2.0}, [("conv_in", 2.0)]):
        with pytest.raises(ValueError):
            ReDilation(bad)


def _expected_factors(unet: nn.Module, scale: float) -> dict[str, float]:
    """The rule written out: resnet conv1/conv2 and sampler convs of every level but the outermost;
    depth i for down_blocks.i, L - 1 - j for up_blocks.j, L - 1 for mid_block; factor min(1 + depth, scale)."""
    levels = len(unet.down_blocks)
    out = {}
    for name, module in unet.named_modules():
        parts = name.split(".")
        if not isinstance(module, nn.Conv2d) or len(parts) < 4:
            continue
        if parts[0] == "mid_block":
            depth, rest = levels - 1, parts[1:]
        elif parts[0] in ("down_blocks", "up_blocks"):
            index = int(parts[1])
            depth, rest = (index if parts[0] == "down_blocks" else levels - 1 - index), parts[2:]
        else:
            continue
        is_resnet_conv = rest[0] == "resnets" and rest[-1] in ("conv1", "conv2")
        is_sampler_conv = rest[0] in ("downsamplers", "upsamplers") and rest[-1] == "conv"
        if (is_resnet_conv or is_sampler_conv) and depth >= 1:
            out[name] = float(min(1 + depth, scale))
    return out


def test_scalecrafter_factors_on_the_tiny_unet(unet):
    factors = scalecrafter_factors(unet, 2.0)
    assert factors == _expected_factors(unet, 2.0)
    assert set(factors) == {
        "down_blocks.1.resnets.0.conv1",
        "down_blocks.1.resnets.0.conv2",
        *(f"mid_block.resnets.{i}.conv{j}" for i in (0, 1) for j in (1, 2)),
        *(f"up_blocks.0.resnets.{i}.conv{j}" for i in (0, 1) for j in (1, 2)),
        "up_blocks.0.upsamplers.0.conv",
    }
    assert not any(n.startswith(("down_blocks.0", "up_blocks.1", "conv_in", "conv_out")) for n in factors)
    assert set(scalecrafter_factors(unet, 1.5).values()) == {1.5}
    reference = _run(unet)
    with redilated(unet, factors):
        assert not torch.equal(_run(unet), reference)
    with pytest.raises(ValueError, match="missing|not modules"), redilated(unet, {**factors, "down_blocks.3.x": 2}):
        pass
    for scale, family in ((0.5, "sd15"), (5.0, "sd15"), (2.0, "sdxl")):
        with pytest.raises(ValueError):
            scalecrafter_factors(unet, scale, family=family)
    with pytest.raises(ValueError, match="not an SD U-Net"):
        scalecrafter_factors(_conv(), 2.0)


def test_scalecrafter_factors_on_the_sd15_layout():
    """The real SD1.5 U-Net (meta weights): 39 convs; 2x -> 2 everywhere; 4x by depth as in ScaleCrafter."""
    sd15 = build_denoiser("sd15", device="meta")
    at2, at4 = scalecrafter_factors(sd15, 2.0), scalecrafter_factors(sd15, 4.0)
    assert at2 == _expected_factors(sd15, 2.0) and len(at2) == 39 and set(at2.values()) == {2.0}
    table = {"down_blocks.1": 2, "up_blocks.2": 2, "down_blocks.2": 3, "up_blocks.1": 3}
    table |= {"down_blocks.3": 4, "up_blocks.0": 4, "mid_block": 4}
    assert at4.keys() == at2.keys()
    for name, factor in at4.items():
        level = name.split(".")[0] if name.startswith("mid_block") else ".".join(name.split(".")[:2])
        assert factor == table[level], name
    assert "down_blocks.1.downsamplers.0.conv" in at4 and "up_blocks.2.upsamplers.0.conv" in at4


# ---------------------------------------------------------------------------------------------- FreeU


def test_freeu_on_then_off_restores_the_output(unet):
    reference = _run(unet)
    before = [sorted(vars(block)) for block in unet.up_blocks]
    with freeu(unet, True):
        with_freeu = _run(unet)
        with freeu(unet, False):  # nested: off inside on
            torch.testing.assert_close(_run(unet), reference, rtol=0, atol=0)
        torch.testing.assert_close(_run(unet), with_freeu, rtol=0, atol=0)
    assert not torch.equal(with_freeu, reference)
    torch.testing.assert_close(_run(unet), reference, rtol=0, atol=0)
    assert [sorted(vars(block)) for block in unet.up_blocks] == before
    unet.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)  # diffusers directly, ScaleCrafter's SD1.5 values
    try:
        torch.testing.assert_close(_run(unet), with_freeu, rtol=0, atol=0)
    finally:
        unet.disable_freeu()
    with pytest.raises(ValueError), freeu(unet, True, s2=0.0):
        pass


# ------------------------------------------------------------------------------------ one-step generation


def test_high_res_spec_is_validated():
    assert HighResSpec(1024, 2048).redilate
    for bad in ({"height": 100, "width": 64}, {"height": 0, "width": 64}, {"height": 64.0, "width": 64}):
        with pytest.raises(ValueError):
            HighResSpec(**bad)
    with pytest.raises(ValueError):
        HighResSpec(64, 64, redilate=1)


def test_one_step_generation_at_twice_the_resolution(pipe):
    teacher = pipe.teacher
    native = HighResSpec(16, 16, redilate=False)  # the tiny backbone's resolution: OneStepPipeline's own call
    torch.testing.assert_close(
        high_res_latents(pipe, PROMPTS, SEEDS, native), pipe.latents(PROMPTS, SEEDS), rtol=0, atol=0
    )
    before = _snapshot(teacher.denoiser)
    plain = high_res_latents(pipe, PROMPTS, SEEDS, HighResSpec(32, 32, redilate=False))
    dilated = high_res_latents(pipe, PROMPTS, SEEDS, HighResSpec(32, 32, redilate=True))
    with_freeu = high_res_latents(pipe, PROMPTS, SEEDS, HighResSpec(32, 32, redilate=True, freeu=True))
    assert plain.shape == dilated.shape == (3, 4, 16, 16)
    assert not torch.allclose(plain, dilated) and not torch.allclose(dilated, with_freeu)
    _assert_same(before, _snapshot(teacher.denoiser))
    images = one_step_high_res(pipe, PROMPTS, SEEDS, HighResSpec(32, 24), batch_size=2)
    assert [im.size for im in images] == [(24, 32)] * 3
    alone = one_step_high_res(pipe, PROMPTS[2:], SEEDS[2:], HighResSpec(32, 24))[0]
    assert alone.tobytes() == images[2].tobytes()
    with pytest.raises(ValueError):
        one_step_high_res(pipe, PROMPTS, SEEDS[:2], HighResSpec(32, 32))


def test_min_depth_gives_the_noise_damped_pass_on_the_sd15_layout():
    """min_depth=2 at 4x: ScaleCrafter's noise-damped CFG pass for 2048² (its 27-line setting) leaves
    down_blocks.1/up_blocks.2 plain and keeps 3 in down_blocks.2/up_blocks.1, 4 in the deepest level."""
    sd15 = build_denoiser("sd15", device="meta")
    at4, damped = scalecrafter_factors(sd15, 4.0), scalecrafter_factors(sd15, 4.0, min_depth=2)
    table = {"down_blocks.2": 3, "up_blocks.1": 3, "down_blocks.3": 4, "up_blocks.0": 4, "mid_block": 4}
    assert len(damped) == 27
    for name, factor in damped.items():
        level = name.split(".")[0] if name.startswith("mid_block") else ".".join(name.split(".")[:2])
        assert factor == table[level], name
    assert damped == {n: f for n, f in at4.items() if not n.startswith(("down_blocks.1.", "up_blocks.2."))}
    assert scalecrafter_factors(sd15, 4.0, min_depth=4) == {}
    for bad in (0, 1.0, True):
        with pytest.raises(ValueError, match="min_depth"):
            scalecrafter_factors(sd15, 4.0, min_depth=bad)


def test_freeu_factors_reach_the_unet(pipe):
    """HighResSpec.freeu_factors against diffusers' enable_freeu called by hand around the same one-step call."""
    from dkd.sampling import seeded_noise
    from dkd.train.step import generate

    teacher = pipe.teacher
    unet = teacher.denoiser
    default = high_res_latents(pipe, PROMPTS, SEEDS, HighResSpec(32, 32, redilate=False, freeu=True))
    stated = {"b1": 1.2, "b2": 1.4, "s1": 0.9, "s2": 0.2}
    spec = HighResSpec(32, 32, redilate=False, freeu=True, freeu_factors=stated)
    torch.testing.assert_close(high_res_latents(pipe, PROMPTS, SEEDS, spec), default, rtol=0, atol=0)
    other = high_res_latents(pipe, PROMPTS, SEEDS, HighResSpec(32, 32, False, True, {"b1": 1.5, "s2": 0.5}))
    unet.enable_freeu(s1=0.9, s2=0.5, b1=1.5, b2=1.4)
    try:
        noise, embeds = seeded_noise(SEEDS, (4, 16, 16)), teacher.encode(PROMPTS)
        expected = generate(teacher, unet, noise, embeds, pipe.t_init, pipe.scaled_input)
    finally:
        unet.disable_freeu()
    torch.testing.assert_close(other, expected, rtol=0, atol=0)
    assert not torch.allclose(other, default)
    for bad in ({"freeu": False, "freeu_factors": stated}, {"freeu": True, "freeu_factors": {"b3": 1.0}},
                {"freeu": True, "freeu_factors": {"b1": 0.0}}, {"freeu": True, "freeu_factors": [1.2]}):  # fmt: skip
        with pytest.raises(ValueError, match="freeu|FreeU"):
            HighResSpec(32, 32, **bad)
