"""The data of relation inversion (dkd.downstream.reversion.relations): exemplar folders in ReVersion's benchmark layout
and their checks, images as tensors, prompt templates from every source (ReVersion's scenarios file parsed,
not run), the drawn exemplars' geometry from their pixels, and the learned token loaded into both samplers
(a token whose row is "and"'s gives the images of the prompt with "and")."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.downstream.reversion.inversion import save_relation_embedding
from dkd.downstream.reversion.relations import (
    COLOURS,
    DEFAULT_TEMPLATES,
    BenchmarkMissingError,
    draw_exemplars,
    embedding_token,
    exemplar_image,
    exemplar_pairs,
    image_prompts,
    load_relation_into,
    load_templates,
    read_exemplars,
    sampler_text_parts,
    teacher_resolution,
    word_cosine,
)
from dkd.sampling import DiffusersSampler, MultiStepSpec, OneStepPipeline


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=4)


def _relation_folder(path, captions: dict, images=None):
    path.mkdir(parents=True, exist_ok=True)
    for name in images if images is not None else captions:
        Image.new("RGB", (8, 6), (10, 20, 30)).save(path / name)
    (path / "text.json").write_text(json.dumps(captions))
    return path


# ----------------------------------------------------------------------------------------- exemplars


def test_read_exemplars_pairs_each_image_with_its_captions(tmp_path):
    captions = {"1.jpg": ["cat {} box", "a cat {} a box"], "0.png": ["dog {} chair"]}
    relation = _relation_folder(tmp_path / "inside", captions)
    (relation / "notes.txt").write_text("not an image")
    got = read_exemplars(relation)
    assert [(e.image.name, e.captions) for e in got] == [
        ("0.png", ("dog {} chair",)),
        ("1.jpg", tuple(captions["1.jpg"])),
    ]
    pairs = exemplar_pairs(got, "<R>", 4)
    assert [c for _, c in pairs] == ["dog <R> chair", "cat <R> box", "a cat <R> a box"]
    assert all(image.shape == (3, 4, 4) and image.dtype == torch.float32 for image, _ in pairs)


@pytest.mark.parametrize(
    "captions,images,match",
    [
        ({"0.png": ["cat box"]}, None, "exactly one"),
        ({"0.png": ["cat {} box {}"]}, None, "exactly one"),
        ({"0.png": "cat {} box"}, None, "list of captions"),
        ({"0.png": []}, None, "list of captions"),
        ({"0.png": ["cat {} box"]}, ["0.png", "1.png"], "without captions"),
        ({"0.png": ["cat {} box"], "2.png": ["a {} b"]}, ["0.png"], "not images"),
        ({}, [], "non-empty mapping"),
    ],
)
def test_read_exemplars_refuses_a_malformed_folder(tmp_path, captions, images, match):
    with pytest.raises(ValueError, match=match):
        read_exemplars(_relation_folder(tmp_path / "on", captions, images))


def test_a_missing_benchmark_folder_says_what_is_missing_and_where_it_comes_from(tmp_path):
    with pytest.raises(BenchmarkMissingError, match="no such folder") as missing:
        read_exemplars(tmp_path / "hug")
    message = str(missing.value)
    assert str(tmp_path / "hug") in message and "github.com/ziqihuangg/ReVersion" in message
    assert "non-commercial" in message and "downstream.reversion.benchmark" in message
    (tmp_path / "hug").mkdir()
    with pytest.raises(FileNotFoundError, match="no text.json in it"):
        read_exemplars(tmp_path / "hug")


def test_exemplar_image_values_and_resize(tmp_path):
    """Uniform colours map to c / 127.5 - 1 exactly (RGB from grey too); a 2x2 checkerboard kept at its size
    gives its own pixels; resizing gives the asked square size."""
    Image.new("RGB", (10, 6), (0, 255, 51)).save(tmp_path / "u.png")
    image = exemplar_image(tmp_path / "u.png", 5)
    assert image.shape == (3, 5, 5)
    for channel, value in enumerate((0, 255, 51)):
        assert torch.all(image[channel] == np.float32(value) / np.float32(127.5) - 1)
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8), mode="L").save(tmp_path / "c.png")
    checker = exemplar_image(tmp_path / "c.png", 2)
    assert checker.tolist() == [[[-1.0, 1.0], [1.0, -1.0]]] * 3
    with pytest.raises(ValueError):
        exemplar_image(tmp_path / "u.png", 0)


# ----------------------------------------------------------------------------------------- templates

SCENARIOS = """\
import os
open(os.path.join(os.path.dirname(__file__), "ran"), "w")  # would show that the file was run
inference_templates = {
    'on': ['book {} table', 'cat {} roof'],
    "hug": ['man {} dog'],
}
"""


def test_templates_from_reversions_scenarios_file_are_read_not_run(tmp_path):
    path = tmp_path / "benchmark_scenarios.py"
    path.write_text(SCENARIOS)
    assert load_templates(path, "on") == ("book {R} table", "cat {R} roof")
    assert load_templates(str(path), "hug") == ("man {R} dog",)
    assert not (tmp_path / "ran").exists()
    with pytest.raises(ValueError, match="no templates for relation 'inside'; it has \\['hug', 'on'\\]"):
        load_templates(path, "inside")
    (tmp_path / "other.py").write_text("templates = {'on': ['a {} b']}\n")
    with pytest.raises(ValueError, match="inference_templates"):
        load_templates(tmp_path / "other.py", "on")


def test_templates_from_lists_and_other_files(tmp_path):
    assert load_templates(None, "anything") == DEFAULT_TEMPLATES and len(DEFAULT_TEMPLATES) == 10
    assert all(t.count("{R}") == 1 and "{}" not in t for t in DEFAULT_TEMPLATES)
    assert load_templates(["a {R} b", "c {} d"], "on") == ("a {R} b", "c {R} d")
    (tmp_path / "t.json").write_text(json.dumps({"on": ["x {} y"]}))
    (tmp_path / "t.yaml").write_text("on_top: ['x {R} y', 'z {} w']\n")
    (tmp_path / "t.txt").write_text("x {R} y\n\n  z {} w  \n")
    assert load_templates(tmp_path / "t.json", "on") == ("x {R} y",)
    assert load_templates(tmp_path / "t.yaml", "on_top") == ("x {R} y", "z {R} w")
    assert load_templates(tmp_path / "t.txt", "any") == ("x {R} y", "z {R} w")
    for bad in (["a {R} {} b"], ["a {R} b {R}"], ["a b"], [], 3):
        with pytest.raises(ValueError):
            load_templates(bad, "on")
    with pytest.raises(FileNotFoundError, match="benchmark_scenarios.py"):
        load_templates(tmp_path / "missing.py", "on")
    with pytest.raises(FileNotFoundError, match="templates file a {R} b does not exist"):  # a string is a file
        load_templates("a {R} b", "on")
    (tmp_path / "t.csv").write_text("x")
    with pytest.raises(ValueError, match=".py"):
        load_templates(tmp_path / "t.csv", "on")


def test_image_prompts_repeat_each_prompt_for_its_samples():
    templates = ("a {R} b", "c {R} d")
    assert image_prompts(templates, "<R>", samples=2) == ["a <R> b", "a <R> b", "c <R> d", "c <R> d"]
    assert image_prompts(templates, "<S>", count=3) == ["a <S> b", "c <S> d", "a <S> b"]
    with pytest.raises(ValueError):
        image_prompts(templates, "<R>", samples=0)


# ----------------------------------------------------------------------------------------- drawn exemplars


def _box(array: np.ndarray, colour: str):
    """(top, left, bottom, right) of the pixels of ``colour``."""
    ys, xs = np.nonzero(np.all(array == COLOURS[colour], axis=-1))
    assert len(ys), colour
    return ys.min(), xs.min(), ys.max(), xs.max()


@pytest.mark.parametrize("relation", ["on", "inside", "hanging_from"])
def test_drawn_exemplars_show_their_relation(tmp_path, relation):
    """The captions name the colours; from the pixels: on, the square's bottom row lies on the box's top row
    and within its width; inside, the square within the box; hanging_from, the square below the bar."""
    text = draw_exemplars(tmp_path / relation, relation, count=6, size=64, seed=1)
    exemplars = read_exemplars(text.parent)
    assert len(exemplars) == 6
    for exemplar in exemplars:
        small, large = exemplar.captions[0].split(" ")[0::3]
        noun = "bar" if relation == "hanging_from" else "box"
        assert exemplar.captions[0] == f"{small} square {{}} {large} {noun}" and small != large
        array = np.asarray(Image.open(exemplar.image).convert("RGB"))
        assert array.shape == (64, 64, 3)
        top, left, bottom, right = _box(array, small)
        btop, bleft, bbottom, bright = _box(array, large)
        if relation == "on":
            assert bottom + 1 == btop and bleft <= left and right <= bright
        elif relation == "inside":
            assert btop < top and bottom < bbottom and bleft < left and right < bright
        else:
            assert bbottom < top
    again = draw_exemplars(tmp_path / "again", relation, count=6, size=64, seed=1)
    assert again.read_text() == text.read_text()
    assert (tmp_path / "again" / "3.png").read_bytes() == (text.parent / "3.png").read_bytes()
    with pytest.raises(ValueError, match="draws the relations"):
        draw_exemplars(tmp_path / "x", "hug")


# ----------------------------------------------------------------------------------------- samplers


def _one_step(folder):
    return OneStepPipeline(load_teacher("tiny-sd", str(folder)))


def _teacher(folder):
    return DiffusersSampler(MultiStepSpec(source=str(folder), steps=2, guidance_scale=7.5, scheduler="DDIMScheduler"))


@pytest.mark.parametrize("make", [_one_step, _teacher], ids=["student", "teacher"])
def test_a_token_with_the_row_of_and_generates_the_images_of_and(folder, tmp_path, make):
    """Loaded into a sampler's text encoder, a token saved with "and"'s row gives, pixel for pixel, the images
    of the prompt that says "and"; another row gives other images."""
    sampler = make(folder)
    tokenizer, encoder = sampler_text_parts(sampler)
    (and_id,) = tokenizer.encode("and", add_special_tokens=False)
    row = encoder.get_input_embeddings().weight.detach()[and_id].clone()
    path = save_relation_embedding(tmp_path / "and.safetensors", "<R>", row)
    assert embedding_token(path) == "<R>"
    token_id = load_relation_into(sampler, path)
    assert tokenizer("cat <R> box").input_ids[2] == token_id == len(tokenizer) - 1
    with_and, with_token = (np.asarray(sampler([p], [3])[0]) for p in ("cat and box", "cat <R> box"))
    assert np.array_equal(with_and, with_token)

    other = make(folder)
    step = torch.randn(row.shape, generator=torch.Generator().manual_seed(0))
    moved = save_relation_embedding(tmp_path / "moved.safetensors", "<R>", row + step)
    load_relation_into(other, moved)
    assert not np.array_equal(np.asarray(other(["cat <R> box"], [3])[0]), with_and)


def test_sampler_text_parts_refuses_a_sampler_without_text_encoder():
    with pytest.raises(ValueError, match="no tokenizer"):
        sampler_text_parts(object())


def test_embedding_token_needs_the_metadata(tmp_path):
    from safetensors.torch import save_file

    save_file({"<R>": torch.zeros(4)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="no token"):
        embedding_token(tmp_path / "plain.safetensors")


def test_word_cosine_and_teacher_resolution(folder):
    teacher = load_teacher("tiny-sd", str(folder))
    rows = teacher.text_encoder.get_input_embeddings().weight.detach().double().numpy()
    (on_id,) = teacher.tokenizer.encode("on", add_special_tokens=False)
    vector = torch.arange(16, dtype=torch.float32) - 7.5
    expected = float(rows[on_id] @ vector.double().numpy()) / (np.linalg.norm(rows[on_id]) * np.linalg.norm(vector))
    assert word_cosine(teacher.tokenizer, teacher.text_encoder, vector, "on") == pytest.approx(expected, abs=1e-6)
    assert math.isclose(
        word_cosine(teacher.tokenizer, teacher.text_encoder, torch.tensor(rows[on_id]), "on"), 1, rel_tol=1e-6
    )
    with pytest.raises(ValueError, match="single token"):
        word_cosine(teacher.tokenizer, teacher.text_encoder, vector, "astride")
    assert teacher_resolution(teacher) == 16  # an 8x8 latent, one VAE downsampling
