"""ControlNet on the one-step student, offline on a tiny SD: the diffusers path is the project's one-step
sampler, a zero ControlNet changes nothing, one U-Net call at t_init on batch B; edge F1 by hand."""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import torch

from dkd.backbones.tiny import save_tiny_backbone
from dkd.downstream.controlnet.pipeline import (
    PARTS,
    STOCK_CONTROLNETS,
    ControlSpec,
    canny_condition,
    canny_edges,
    edge_f1,
    load_controlnet,
    one_step_call_kwargs,
    one_step_controlnet_pipeline,
    student_generator_input,
    teacher_call_kwargs,
    teacher_controlnet_pipeline,
    time_saving,
    timed_parts,
)
from dkd.sampling import OneStepPipeline
from dkd.sampling.pipeline import STUDENT_INFO

PROMPTS = ["a handwritten digit 3", "a handwritten digit 7"]
SEEDS = [11, 12]


def _student(folder, t_init=999, scaled_input=False, backbone="tiny-sd"):
    """The tiny SD teacher taken as a one-step student: its folder plus the export's student record."""
    save_tiny_backbone("sd", folder, seed=3)
    info = {"backbone": backbone, "t_init": t_init, "scaled_input": scaled_input}
    (folder / STUDENT_INFO).write_text(json.dumps(info))
    return folder


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return _student(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="module")
def zero_controlnet(student):
    """``from_unet``: the student's encoder copied, zero convolutions out; one stride-2 step in the
    condition embedding, as the tiny VAE downsamples by 2 (SD's by 8 needs the stock four)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(student / "unet")
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16)).eval()


@pytest.fixture(scope="module")
def live_controlnet(zero_controlnet):
    """The zero ControlNet with its zero convolutions (down blocks, mid block) set to random values."""
    net = copy.deepcopy(zero_controlnet)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return net


@pytest.fixture(scope="module")
def zero_pipe(student, zero_controlnet):
    return one_step_controlnet_pipeline(student, zero_controlnet, device="cpu")


@pytest.fixture(scope="module")
def live_pipe(student, live_controlnet):
    return one_step_controlnet_pipeline(student, live_controlnet)


@pytest.fixture(scope="module")
def plain_latents(zero_pipe, condition):
    """The one-step latents with the zero ControlNet (shown equal to no ControlNet below)."""
    return _run(zero_pipe, condition)


@pytest.fixture(scope="module")
def condition():
    """A 16 x 16 condition image (the tiny pipeline's resolution): a white square on black."""
    from PIL import Image

    array = np.zeros((16, 16, 3), dtype=np.uint8)
    array[4:12, 4:12] = 255
    return Image.fromarray(array)


def _generators(seeds=SEEDS):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _run(pipe, condition, output_type="latent", **overrides):
    kwargs = {**one_step_call_kwargs(999), **overrides}
    out = pipe(PROMPTS, image=[condition] * len(PROMPTS), generator=_generators(), output_type=output_type, **kwargs)
    return out.images


def _plain_one_step(student, scheduler, output_type):
    """The same student and scheduler in diffusers' plain StableDiffusionPipeline, no ControlNet."""
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(student, safety_checker=None, scheduler=scheduler)
    plain.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": 1, "timesteps": [999], "guidance_scale": 1.0}
    return plain(PROMPTS, generator=_generators(), output_type=output_type, **call).images


def test_zero_controlnet_leaves_the_one_step_image_bit_for_bit(student, zero_pipe, plain_latents, condition):
    """A fresh ControlNet's residuals are exact zeros (zero convolutions), and x + 0 == x in floating
    point: latents and 8-bit images equal the plain pipeline's (same scheduler) bit for bit."""
    assert type(zero_pipe.scheduler).__name__ == "LCMScheduler"
    torch.testing.assert_close(plain_latents, _plain_one_step(student, zero_pipe.scheduler, "latent"), rtol=0, atol=0)
    for a, b in zip(_run(zero_pipe, condition, "pil"), _plain_one_step(student, zero_pipe.scheduler, "pil")):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("t_init,scaled_input", [(999, False), (625, True)])
def test_the_diffusers_path_is_the_projects_one_step_sampler(
    tmp_path, zero_controlnet, condition, t_init, scaled_input
):
    """OneStepPipeline (x0 = (z - sqrt(1 - abar) eps) / sqrt(abar) in float64, rounded to float32) against
    LCMScheduler's step in float32: equal to float32 rounding (a few ulps of |x0| <= ~50), images to one
    8-bit level. SiD-LSG's generator input (sigma_625 z at t = 625) goes through init_noise_sigma."""
    folder = _student(tmp_path / "student", t_init=t_init, scaled_input=scaled_input)
    pipe = one_step_controlnet_pipeline(folder, zero_controlnet)
    kwargs = one_step_call_kwargs(t_init)
    got = pipe(PROMPTS, image=[condition] * 2, generator=_generators(), output_type="latent", **kwargs).images
    reference = OneStepPipeline.from_pretrained(folder)
    expected = reference.latents(PROMPTS, SEEDS)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    images = pipe(PROMPTS, image=[condition] * 2, generator=_generators(), **kwargs).images
    for a, b in zip(images, reference(PROMPTS, SEEDS)):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


def test_live_controlnet_changes_the_image_and_scale_zero_restores_it(live_pipe, plain_latents, condition):
    assert (_run(live_pipe, condition) - plain_latents).abs().max() > 1e-3
    torch.testing.assert_close(
        _run(live_pipe, condition, controlnet_conditioning_scale=0.0), plain_latents, rtol=0, atol=0
    )


def test_control_guidance_end_below_one_switches_the_control_off_at_one_step(live_pipe, plain_latents, condition):
    """Regression guard on diffusers' controlnet_keep: at one step (i = 0 of 1) the control is kept only
    if start <= 0 and end >= 1, so end = 0.5 (or start = 0.1) gives the no-control image."""
    torch.testing.assert_close(_run(live_pipe, condition, control_guidance_end=0.5), plain_latents, rtol=0, atol=0)
    torch.testing.assert_close(_run(live_pipe, condition, control_guidance_start=0.1), plain_latents, rtol=0, atol=0)


def test_one_unet_call_at_t999_on_batch_b(live_pipe, condition):
    calls = {"unet": [], "controlnet": []}
    hooks = [
        getattr(live_pipe, name).register_forward_hook(
            lambda module, args, out, seen=calls[name]: seen.append((args[0].shape[0], int(args[1])))
        )
        for name in calls
    ]
    try:
        _run(live_pipe, condition)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"unet": [(2, 999)], "controlnet": [(2, 999)]}


def test_teacher_runs_ddim_with_cfg_at_the_leading_timesteps(student, zero_controlnet, condition):
    """DDIM from SD's scheduler config (leading spacing, offset 1): 4 steps of 1000 // 4 = 250 are
    t = 751, 501, 251, 1, each one U-Net call on the CFG batch 2B."""
    pipe = teacher_controlnet_pipeline(student, zero_controlnet)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    calls = []
    pipe.unet.register_forward_hook(lambda module, args, out: calls.append((args[0].shape[0], int(args[1]))))
    pipe(PROMPTS, image=[condition] * 2, generator=_generators(), output_type="latent", **teacher_call_kwargs(4, 7.5))
    assert calls == [(4, 751), (4, 501), (4, 251), (4, 1)]
    with pytest.raises(ValueError, match="steps"):
        teacher_call_kwargs(0)
    with pytest.raises(ValueError, match="t_init"):
        one_step_call_kwargs(0)


def test_controlnet_loads_from_a_spec_folder(student, live_controlnet, condition, tmp_path):
    live_controlnet.save_pretrained(tmp_path / "net")
    spec = ControlSpec("canny", controlnet=str(tmp_path / "net"))
    loaded = load_controlnet(spec)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), live_controlnet.parameters()))
    pipe = one_step_controlnet_pipeline(student, spec)
    assert all(torch.equal(a, b) for a, b in zip(pipe.controlnet.parameters(), live_controlnet.parameters()))


def test_student_generator_input_is_read_and_checked(tmp_path):
    assert student_generator_input(tmp_path) == (999, False)  # no record: the paper's generator
    (tmp_path / STUDENT_INFO).write_text(json.dumps({"backbone": "sd15", "t_init": 625, "scaled_input": True}))
    assert student_generator_input(tmp_path) == (625, True)
    (tmp_path / STUDENT_INFO).write_text(json.dumps({"backbone": "pixart256", "t_init": 999}))
    with pytest.raises(ValueError, match="SD U-Net"):
        student_generator_input(tmp_path)
    (tmp_path / STUDENT_INFO).write_text(json.dumps({"backbone": "sd15", "t_init": 0}))
    with pytest.raises(ValueError, match="t_init"):
        student_generator_input(tmp_path)
    with pytest.raises(ValueError, match="folder"):
        one_step_controlnet_pipeline(tmp_path / "missing", "x")


def test_control_spec_defaults_and_validation():
    spec = ControlSpec("depth")
    assert spec.controlnet == "lllyasviel/control_v11f1p_sd15_depth" and spec.revision is None
    assert set(STOCK_CONTROLNETS) == {"canny", "depth", "openpose"}
    assert ControlSpec("canny", revision="abc").revision == "abc"
    assert ControlSpec("openpose", controlnet="/models/net").controlnet == "/models/net"
    for bad in (
        {"kind": "seg"},
        {"kind": "canny", "conditioning_scale": -1.0},
        {"kind": "canny", "conditioning_scale": float("nan")},
        {"kind": "canny", "canny_thresholds": (200, 100)},
        {"kind": "canny", "controlnet": ""},
    ):
        with pytest.raises(ValueError):
            ControlSpec(**bad)


def test_edge_f1_by_hand():
    square = np.zeros((6, 6), dtype=np.uint8)
    square[1:5, 1] = square[1:5, 4] = square[1, 1:5] = square[4, 1:5] = 255  # 12 border pixels
    assert edge_f1(square, square) == 1.0
    # condition: 4 pixels in a row; output: 2 of them plus 1 pixel elsewhere.
    cond, out = np.zeros((5, 5), bool), np.zeros((5, 5), bool)
    cond[2, 0:4] = True
    out[2, 0] = out[2, 1] = out[4, 4] = True
    precision, recall = 2 / 3, 2 / 4
    assert edge_f1(cond, out) == pytest.approx(2 * precision * recall / (precision + recall))  # 4/7
    # shifted one row down, (4, 4) wrapping to (0, 4): no exact hit; (3, 0), (3, 1) are 1 below (2, 0), (2, 1);
    # (2, 2) is sqrt(2) from (3, 1) (within radius 2, not 1); (2, 3) and (0, 4) are sqrt(5) from everything.
    shifted = np.roll(out, 1, axis=0)
    assert edge_f1(cond, shifted) == 0.0
    precision, recall = 2 / 3, 2 / 4
    assert edge_f1(cond, shifted, tolerance=1) == pytest.approx(2 * precision * recall / (precision + recall))
    precision, recall = 2 / 3, 3 / 4
    assert edge_f1(cond, shifted, tolerance=2) == pytest.approx(2 * precision * recall / (precision + recall))
    assert edge_f1(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0  # both empty: identical
    assert edge_f1(np.zeros((3, 3)), np.eye(3)) == 0.0 and edge_f1(np.eye(3), np.zeros((3, 3))) == 0.0
    with pytest.raises(ValueError, match="shape"):
        edge_f1(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="tolerance"):
        edge_f1(np.eye(3), np.eye(3), tolerance=-1)


def test_canny_without_opencv_or_scikit_image_names_the_package(condition, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.feature", None)
    with pytest.raises(ImportError, match="opencv-python-headless"):
        canny_edges(condition, 100, 200)
    with pytest.raises(ValueError, match="thresholds"):
        canny_edges(condition, 200, 100)


@pytest.mark.parametrize("backend", ["cv2", "skimage"])
def test_canny_edges_trace_a_square(condition, backend, monkeypatch):
    """A white 8 x 8 square on black: the edge pixels are on its border (rows/columns 3-4 or 11-12, the
    step lying between them) and every side is found."""
    pytest.importorskip(backend)
    if backend == "skimage":
        monkeypatch.setitem(sys.modules, "cv2", None)
    edges = canny_edges(condition, 100, 200)
    assert edges.shape == (16, 16) and set(np.unique(edges)) <= {0, 255}
    rows, cols = np.nonzero(edges)
    near_border = np.isin(rows, (3, 4, 11, 12)) | np.isin(cols, (3, 4, 11, 12))
    assert near_border.all() and {3, 4} & set(rows) and {11, 12} & set(rows) and {3, 4} & set(cols)
    assert np.asarray(canny_condition(condition)).shape == (16, 16, 3)


def test_timed_parts_structure_and_time_saving(zero_pipe, condition):
    pipe = zero_pipe
    result = timed_parts(pipe, "a digit", condition, seed=1, call_kwargs=one_step_call_kwargs(), repeats=2, warmup=1)
    assert set(result) == {*PARTS, "total"}
    for part in (*PARTS, "total"):
        assert result[part]["repeats"] == 2 and result[part]["median_s"] > 0
    assert result["total"]["warmup"] == 1 and len(result["total"]["times_s"]) == 2
    assert sum(result[part]["min_s"] for part in PARTS) <= max(result["total"]["times_s"])
    assert "forward" not in vars(pipe.unet) and "decode" not in vars(pipe.vae)  # the clocks are removed
    assert time_saving(1, 10) == 0.9
    assert time_saving(0.1374, 1.0) == pytest.approx(0.8626)
    for bad in ((1, 0), (-1, 2), (float("nan"), 1)):
        with pytest.raises(ValueError):
            time_saving(*bad)
