"""The controlnet target's library (dkd.downstream.controlnet.run and .summary), offline on a tiny
SD: settings validated, hub files named, conditions against OpenCV, the tiny ControlNet against the
teacher it copies, the image sets against direct pipeline calls, F1 against a per-pixel count, the
summary against hand-written timing files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dkd.backbones.tiny import save_tiny_backbone
from dkd.downstream.controlnet.pipeline import STOCK_CONTROLNETS, canny_condition, one_step_controlnet_pipeline
from dkd.downstream.controlnet.run import (
    TargetControl,
    TargetSettings,
    canny_f1_scores,
    controlnet_files,
    controlnet_pipeline,
    draw_source,
    generate_images,
    image_name,
    load_source_image,
    make_condition,
    split_hub_file,
    tiny_controlnet,
)
from dkd.downstream.controlnet.summary import PAPER_SAVING, grid_paths, summary_rows, write_controlnet_summary
from dkd.fetch import files_for
from dkd.report.downstream import read_summary
from dkd.sampling.pipeline import STUDENT_INFO

CANNY = "lllyasviel/control_v11p_sd15_canny"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """The tiny SD teacher, also taken as a one-step student (its export record: t_init 999)."""
    folder = save_tiny_backbone("sd", tmp_path_factory.mktemp("teacher"), seed=3)
    (folder / STUDENT_INFO).write_text(json.dumps({"backbone": "tiny-sd", "t_init": 999, "scaled_input": False}))
    return folder


@pytest.fixture(scope="module")
def net(teacher):
    return tiny_controlnet(teacher, seed=0)


def _control(controlnet, **settings):
    return TargetControl.from_config("canny", {"controlnet": str(controlnet), "image": "tiny",
                                               "prompts": ["a red apple", "a digit 7"], **settings})  # fmt: skip


def test_settings_from_config_and_their_validation():
    control = TargetControl.from_config("depth", {"image": "x.png", "annotator": "none", "prompts": "a room"})
    assert control.spec.controlnet == STOCK_CONTROLNETS["depth"].repo and control.spec.canny_thresholds == (100, 200)
    assert control.prompts == ("a room",) and control.spec.conditioning_scale == 1.0
    canny = TargetControl.from_config("canny", {"image": "hf://o/r/a/b.png", "low": 50, "high": 90, "prompts": ["p"]})
    assert canny.spec.canny_thresholds == (50, 90) and canny.annotator == "canny"
    settings = {"seeds": 3, "resolution": 64, "teacher": {"steps": 4, "guidance_scale": 2.0}, "timing": {"warmup": 0}}
    parsed = TargetSettings.from_config({**settings, "controls": {}, "backbone": "sd15"})
    assert (parsed.seeds, parsed.resolution, parsed.steps, parsed.guidance_scale) == ((0, 1, 2), 64, 4, 2.0)
    assert (parsed.warmup, parsed.repeats, parsed.f1_tolerance) == (0, 20, 0)
    assert TargetSettings(seeds=[7, 5]).seeds == (7, 5)
    bad_controls = [
        {"image": "x", "prompts": ["p"], "lowe": 1},
        {"image": "x", "prompts": ["p"], "annotator": "midas"},
        {"image": "x", "prompts": []},
        {"image": "x", "prompts": ["p", " "]},
        {"prompts": ["p"]},
        {"image": "hf://owner/repo", "prompts": ["p"]},
        {"image": "x", "prompts": ["p"], "low": 300},
    ]
    for bad in bad_controls:
        with pytest.raises(ValueError):
            TargetControl.from_config("canny", bad)
    for bad in ({"seeds": 0}, {"seeds": [1, 1]}, {"seeds": [-1]}, {"resolution": 30}, {"steps": 0},
                {"guidance_scale": -1.0}, {"warmup": -1}, {"repeats": 0}, {"f1_tolerance": 1.5}):  # fmt: skip
        with pytest.raises(ValueError):
            TargetSettings(**bad)


def test_hub_files_of_a_control():
    assert split_hub_file(f"hf://{CANNY}/images/input.png") == (CANNY, "images/input.png")
    own = files_for("controlnet", source=CANNY, revision="abc", image=f"hf://{CANNY}/images/input.png")
    assert [(f.kind, f.source, f.filename, f.revision) for f in own] == [
        ("model_folder", CANNY, None, "abc"), ("hub_file", CANNY, "images/input.png", "abc")]  # fmt: skip
    other = controlnet_files(CANNY, "abc", "hf://someone/pictures/a/b.png")
    assert (other[1].source, other[1].filename, other[1].revision) == ("someone/pictures", "a/b.png", None)
    assert (
        controlnet_files("tiny", None, "tiny") == [] and controlnet_files(CANNY, None, "local.png")[0].revision is None
    )


def test_source_image_from_a_path_and_offline_from_the_hub(tmp_path, monkeypatch):
    Image.new("L", (5, 3), 90).save(tmp_path / "grey.png")
    loaded = load_source_image(str(tmp_path / "grey.png"))
    assert loaded.mode == "RGB" and loaded.size == (5, 3) and np.asarray(loaded).max() == 90
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        load_source_image("hf://nobody/nothing-here/images/input.png")


def test_condition_is_the_centre_square_then_opencv_canny():
    """A 48 x 32 picture: its centre 32 x 32 columns (8 .. 40), at 32 px no resampling, then cv2.Canny
    in all three channels; annotator none: the square itself."""
    picture = np.asarray(draw_source(48, seed=1))[8:40]  # 32 rows x 48 columns
    control = TargetControl.from_config("canny", {"image": "x", "prompts": ["p"], "low": 60, "high": 120})
    condition = np.asarray(make_condition(Image.fromarray(picture), control, 32))
    reference = cv2.Canny(np.ascontiguousarray(picture[:, 8:40]), 60, 120)
    assert condition.shape == (32, 32, 3) and reference.any()
    assert all((condition[:, :, c] == reference).all() for c in range(3))
    plain = TargetControl.from_config("depth", {"image": "x", "prompts": ["p"], "annotator": "none"})
    assert (np.asarray(make_condition(Image.fromarray(picture), plain, 32)) == picture[:, 8:40]).all()


def test_drawn_source_is_seeded_and_has_edges():
    a, b, c = (np.asarray(draw_source(32, seed=s)) for s in (0, 0, 1))
    assert a.shape == (32, 32, 3) and (a == b).all() and (a != c).any()
    assert cv2.Canny(a, 100, 200).sum() > 0 and len(np.unique(a.reshape(-1, 3), axis=0)) > 1


def test_tiny_controlnet_copies_the_teacher_encoder_and_reads_the_condition(teacher, net):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(teacher / "unet").state_dict()
    copied = {k: v for k, v in net.state_dict().items() if k in unet}
    assert any(k.startswith("down_blocks") for k in copied) and "conv_in.weight" in copied
    assert all(torch.equal(v, unet[k]) for k, v in copied.items())
    zero_convs = ("controlnet_cond_embedding.conv_out", "controlnet_down_blocks", "controlnet_mid_block")
    live = {k: v for k, v in net.state_dict().items() if k.startswith(zero_convs)}
    assert live and all(v.abs().sum() > 0 for v in live.values())
    again, other = tiny_controlnet(teacher, seed=0).state_dict(), tiny_controlnet(teacher, seed=1).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in live.items()) and any(
        not torch.equal(v, other[k]) for k, v in live.items()
    )
    vae = AutoencoderKL.from_pretrained(teacher / "vae")
    latent = vae.encode(torch.zeros(1, 3, 16, 16)).latent_dist.mean
    with torch.no_grad():
        embedded = net.controlnet_cond_embedding(torch.zeros(1, 3, 16, 16))
    assert embedded.shape[-2:] == latent.shape[-2:]  # the condition lands on the latent grid
    pipe = one_step_controlnet_pipeline(teacher, net)
    first, second = (canny_condition(draw_source(16, seed=s)) for s in (0, 1))
    kwargs = {"num_inference_steps": 1, "timesteps": [999], "guidance_scale": 1.0, "output_type": "latent"}
    latents = [pipe("a", image=c, generator=torch.Generator().manual_seed(0), **kwargs).images for c in (first, second)]
    assert (latents[0] - latents[1]).abs().max() > 1e-3


def test_model_pipelines_and_their_call_settings(tmp_path, net):
    student = save_tiny_backbone("sd", tmp_path / "student", seed=3)
    (student / STUDENT_INFO).write_text(json.dumps({"backbone": "tiny-sd", "t_init": 625, "scaled_input": True}))
    control = _control(tmp_path / "net")
    net.save_pretrained(tmp_path / "net")
    settings = TargetSettings(steps=3, guidance_scale=5.0)
    pipe, call = controlnet_pipeline("student", student, control, settings, device="cpu", dtype=torch.float32)
    assert type(pipe.scheduler).__name__ == "LCMScheduler" and pipe.scheduler.init_noise_sigma < 1
    assert (call["timesteps"], call["num_inference_steps"], call["guidance_scale"]) == ([625], 1, 1.0)
    pipe, call = controlnet_pipeline("teacher", student, control, settings, device="cpu", dtype=torch.float32)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert (call["num_inference_steps"], call["guidance_scale"], call["controlnet_conditioning_scale"]) == (3, 5.0, 1.0)
    with pytest.raises(ValueError, match="model"):
        controlnet_pipeline("published", student, control, settings, device="cpu", dtype=torch.float32)


def test_generated_images_are_the_direct_calls_per_prompt_and_seed(teacher, net, tmp_path):
    pipe = one_step_controlnet_pipeline(teacher, net)
    condition = canny_condition(draw_source(16, seed=2))
    call = {"num_inference_steps": 1, "timesteps": [999], "guidance_scale": 1.0}
    records = generate_images(pipe, ["a red apple", "a digit 7"], [4, 9], condition, tmp_path, call)
    assert [(r["file"], r["prompt"], r["seed"]) for r in records] == [
        (image_name(i, s), p, s) for i, p in enumerate(["a red apple", "a digit 7"]) for s in (4, 9)]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r["file"] for r in records)
    for record in records:
        single = pipe(record["prompt"], image=condition, generator=torch.Generator().manual_seed(record["seed"]),
                      **call).images[0]  # fmt: skip
        saved = np.asarray(Image.open(tmp_path / record["file"]), dtype=int)
        assert saved.shape == (16, 16, 3) and np.abs(saved - np.asarray(single, dtype=int)).max() <= 1


def test_canny_f1_scores_against_a_per_pixel_count(tmp_path):
    picture = draw_source(32, seed=0)
    canny_condition(picture, 100, 200).save(tmp_path / "condition.png")
    shifted = np.roll(np.asarray(picture), 1, axis=1)
    images = {"same.png": picture, "grey.png": Image.new("RGB", (32, 32), (128, 128, 128)),
              "shifted.png": Image.fromarray(shifted)}  # fmt: skip
    for name, image in images.items():
        image.save(tmp_path / name)
    scores = canny_f1_scores(tmp_path / "condition.png", [tmp_path / n for n in images], (100, 200))
    condition, moved = cv2.Canny(np.asarray(picture), 100, 200) > 0, cv2.Canny(shifted, 100, 200) > 0
    overlap = (condition & moved).sum()
    assert 0 < overlap < condition.sum()
    assert scores["per_image"][:2] == [1.0, 0.0]
    assert scores["per_image"][2] == pytest.approx(2 * overlap / (condition.sum() + moved.sum()))
    assert scores["mean"] == pytest.approx(np.mean(scores["per_image"]))
    loose = canny_f1_scores(tmp_path / "condition.png", [tmp_path / "shifted.png"], (100, 200), tolerance=1)
    assert loose["per_image"][0] > scores["per_image"][2] and loose["tolerance"] == 1


def _timing(path, model, total, parts=(0.1, 0.2, 0.3)):
    if model == "teacher":
        call = {"num_inference_steps": 50, "guidance_scale": 7.5}
    else:
        call = {"num_inference_steps": 1, "timesteps": [999], "guidance_scale": 1.0}
    medians = {part: {"median_s": value} for part, value in zip(("text_encoder", "denoise", "vae_decode"), parts)}
    total = {"median_s": total, "repeats": 2, "warmup": 1, "device": "a CPU"}
    record = {"model": model, "nfe": call["num_inference_steps"], "call": call, "dtype": "torch.float32"}
    path.write_text(json.dumps({**record, "diffusers": "0.42.1", "parts": {**medians, "total": total}}))
    return str(path)


def _images(folder, model, colour, pairs):
    (folder / model).mkdir(parents=True)
    records = []
    for i, (prompt, seed) in enumerate(pairs):
        Image.new("RGB", (8, 8), colour).save(folder / model / f"{i}.png")
        records.append({"file": f"{i}.png", "prompt": prompt, "seed": seed})
    marker = folder / f"{model}.json"
    marker.write_text(json.dumps({"folder": model, "images": records}))
    return str(marker)


def test_summary_reads_the_numbers_back_and_draws_the_grid(tmp_path):
    pairs = [("a", 0), ("a", 1), ("b", 0)]
    Image.new("RGB", (8, 8), (255, 255, 255)).save(tmp_path / "condition.png")
    (tmp_path / "f1.json").write_text(json.dumps({"mean": 0.25, "tolerance": 0}))
    teacher = {
        "images": _images(tmp_path, "teacher", (255, 0, 0), pairs),
        "timing": _timing(tmp_path / "t.json", "teacher", 4.0),
        "f1": str(tmp_path / "f1.json"),
    }
    student = {
        "images": _images(tmp_path, "student", (0, 0, 255), pairs),
        "timing": _timing(tmp_path / "s.json", "student", 0.5, (0.1, 0.05, 0.3)),
    }
    files = {"canny": {"condition": str(tmp_path / "condition.png"), "teacher": teacher, "student": student}}
    rows = summary_rows(files)
    assert rows[0] == ("canny", "teacher, DDIM 50 steps, CFG 7.5", 50, 0.1, 0.2, 0.3, 4.0, "—", "—", 0.25)
    assert rows[1][:7] == ("canny", "DKD student, 1 step at t = 999, no CFG", 1, 0.1, 0.05, 0.3, 0.5)
    assert rows[1][7] == pytest.approx(100 * (1 - 0.5 / 4.0)) and rows[1][8:] == (PAPER_SAVING, "—")
    summary = write_controlnet_summary(tmp_path / "summary.json", files, {"canny": str(tmp_path / "grid.png")}, cell=8)
    assert read_summary(tmp_path / "summary.json") == summary and summary.figures[0].file == "grid.png"
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (3 * 8, 3 * 8, 3)  # a row per (prompt, seed): condition | teacher | student
    assert (grid[:, :8] == 255).all() and (grid[:, 8:16] == (255, 0, 0)).all() and (grid[:, 16:] == (0, 0, 255)).all()
    changed = json.loads(open(student["images"]).read())
    changed["images"][1]["seed"] = 5
    (tmp_path / "student.json").write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="different prompts or seeds"):
        grid_paths(tmp_path / "condition.png", files["canny"]["teacher"]["images"], tmp_path / "student.json")
