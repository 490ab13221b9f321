"""The dreambooth target's pure parts: subjects and their classes, DreamBooth's evaluation prompts, the drawn
synthetic subject, the hub files to fetch, arm settings, the seeds of an arm's images, the summary's table
(means over subjects against a hand computation) and grid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dkd.data.download import DataUnavailableError
from dkd.downstream.dreambooth.data import (
    LIVE_PROMPTS,
    OBJECT_PROMPTS,
    SUBJECT_CLASSES,
    SYNTHETIC_SUBJECTS,
    class_slug,
    draw_subject,
    dreambooth_files,
    evaluation_prompts,
    fetch_subject_photos,
    prepare_photos,
    subject,
)
from dkd.downstream.dreambooth.evaluate import arm_grid, arm_table, parse_arm, sample_arm
from dkd.downstream.dreambooth.method import DreamBoothConfig, arm_config
from dkd.fetch import files_for


def test_subjects_classes_and_kinds():
    assert len(SUBJECT_CLASSES) == 30 and len(set(SUBJECT_CLASSES.values())) == 15  # the data set's 30 in 15
    live = [name for name in SUBJECT_CLASSES if subject(name).kind == "live"]
    assert len(live) == 9 and all(SUBJECT_CLASSES[n] in ("cat", "dog") for n in live)  # 9 live, 21 objects
    dog = subject("dog2")
    assert (dog.class_name, dog.kind, dog.synthetic) == ("dog", "live", False)
    assert (dog.instance_prompt, dog.class_prompt) == ("a photo of sks dog", "a photo of dog")
    assert subject("red_disc").synthetic and subject("red_disc").class_name == "toy"
    assert class_slug("stuffed animal") == "stuffed_animal"
    with pytest.raises(ValueError, match="unknown DreamBooth subject"):
        subject("dog4")


def test_evaluation_prompts_per_kind():
    assert len(OBJECT_PROMPTS) == len(LIVE_PROMPTS) == 25 and len(set(OBJECT_PROMPTS + LIVE_PROMPTS)) == 35
    assert OBJECT_PROMPTS[:10] == LIVE_PROMPTS[:10] and OBJECT_PROMPTS[20:] == LIVE_PROMPTS[20:]
    prompts = evaluation_prompts(subject("cat2"))
    assert len(prompts) == 25
    assert prompts[0] == ("a sks cat in the jungle", "a cat in the jungle")
    assert prompts[10] == ("a sks cat wearing a red hat", "a cat wearing a red hat")
    assert prompts[24] == ("a cube shaped sks cat", "a cube shaped cat")
    teapot = evaluation_prompts(subject("teapot"), 11, identifier="zwx")
    assert teapot[10] == (
        "a zwx teapot with a wheat field in the background",
        "a teapot with a wheat field in the background",
    )
    for bad in (0, 26, 2.0, True):
        with pytest.raises(ValueError, match="count"):
            evaluation_prompts(subject("teapot"), bad)


def test_drawn_subject_is_its_shape_at_seeded_places(tmp_path):
    paths = draw_subject("red_disc", tmp_path / "a", count=4, size=24, seed=5)
    assert [p.name for p in paths] == ["00.png", "01.png", "02.png", "03.png"]
    again = draw_subject("red_disc", tmp_path / "b", count=4, size=24, seed=5)
    arrays = [np.asarray(Image.open(p)) for p in paths]
    assert all(np.array_equal(a, np.asarray(Image.open(b))) for a, b in zip(arrays, again))
    colour = np.array(SYNTHETIC_SUBJECTS["red_disc"][0])
    for array in arrays:
        assert array.shape == (24, 24, 3)
        inside = np.all(array == colour, axis=-1)
        assert 30 <= inside.sum() <= 64  # a disc in an 8 x 8 box: about pi 4^2 = 50 pixels
    centres = {tuple(np.argwhere(np.all(a == colour, axis=-1)).mean(0).round()) for a in arrays}
    assert len(centres) > 1  # varied positions
    square = np.asarray(Image.open(draw_subject("blue_square", tmp_path / "c", count=1, size=24)[0]))
    assert np.all(square == SYNTHETIC_SUBJECTS["blue_square"][0], axis=-1).sum() == 64  # the whole 8 x 8 box


def test_prepare_photos_checks_the_class_and_records_the_subject(tmp_path):
    record = prepare_photos("red_disc", "toy", tmp_path, dataset={"photos": 2, "size": 16}, seed=0)
    assert record == {"subject": "red_disc", "class": "toy", "kind": "object", "photos": ["00.png", "01.png"]}
    assert Image.open(tmp_path / "01.png").size == (16, 16)
    with pytest.raises(ValueError, match="is a 'toy', not a 'dog'"):
        prepare_photos("red_disc", "dog", tmp_path, dataset={})
    with pytest.raises(ValueError, match="not a synthetic subject"):
        draw_subject("dog", tmp_path)


def test_photos_offline_without_a_cache_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataUnavailableError, match="subject 'dog'.*snakemake downloads"):
        fetch_subject_photos("dog", tmp_path / "out")


def test_hub_files_to_fetch():
    models = {
        "dino": {"source": "facebook/dino-vits16", "revision": None},
        "clip": {"source": "openai/clip-vit-base-patch32"},
    }
    files = files_for("dreambooth", subjects=["dog", "backpack"], dataset={"source": "google/dreambooth"},
                      metric_models=models)  # fmt: skip
    assert [(f.kind, f.source, f.subfolder, f.revision) for f in files] == [
        ("hub_dataset", "google/dreambooth", "dataset/dog", None),
        ("hub_dataset", "google/dreambooth", "dataset/backpack", None),
        ("transformers", "facebook/dino-vits16", None, None),
        ("transformers", "openai/clip-vit-base-patch32", None, None),
    ]
    with pytest.raises(ValueError, match="synthetic subject"):
        dreambooth_files(subjects=["red_disc"])


def test_arm_config_puts_settings_over_the_paper():
    config = arm_config("lora", {"rank": 2, "steps": 3}, {"steps": 5}, None)
    assert config == DreamBoothConfig.paper("lora", rank=2, steps=5)
    with pytest.raises(ValueError, match=r"unknown DreamBooth setting\(s\) \['method', 'ranks'\]"):
        arm_config("ft", {"ranks": 2, "method": "lora"})


def test_parse_arm():
    assert parse_arm("lorad") == ("teacher", "lorad") and parse_arm("dkd-ft") == ("student", "ft")
    with pytest.raises(ValueError, match="unknown DreamBooth arm"):
        parse_arm("dkd-dora")


class _SeedColour:
    """A sampler double: a 4 x 4 image whose red channel is the seed and green the prompt's length."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, seeds, batch_size):
        self.calls.append(len(prompts))
        return [Image.new("RGB", (4, 4), (int(s), len(p), 0)) for p, s in zip(prompts, seeds)]


def test_sample_arm_gives_image_i_seed_plus_i(tmp_path):
    sampler = _SeedColour()
    prompts = [("a sks toy", "a toy"), ("a red sks toy", "a red toy")]
    records = sample_arm(sampler, prompts, tmp_path, images_per_prompt=3, seed=10, batch_size=4)
    assert sampler.calls == [4, 2]
    assert [r["seed"] for r in records] == list(range(10, 16))
    assert [r["text"] for r in records] == ["a toy"] * 3 + ["a red toy"] * 3
    for r in records:
        pixel = Image.open(tmp_path / r["file"]).getpixel((0, 0))
        assert pixel == (r["seed"], len(r["prompt"]), 0)


def test_arm_table_means_over_subjects():
    metrics = {
        ("dog", "lorad"): {"dino": 0.5, "clip_i": 0.75, "clip_t": 0.25},
        ("can", "lorad"): {"dino": 0.25, "clip_i": 0.5, "clip_t": 0.125},
        ("dog", "dkd-lorad"): {"dino": 0.1, "clip_i": 0.2, "clip_t": 0.3},
        ("can", "dkd-lorad"): {"dino": 0.3, "clip_i": 0.4, "clip_t": 0.1},
    }
    table = arm_table(["lorad", "dkd-lorad"], ["dog", "can"], metrics, {"lorad": 7, "dkd-lorad": 7})
    assert table.rows[0] == ("lorad", "teacher", "lorad", "multi-step", 7, 0.375, 0.625, 0.1875)
    assert table.rows[1][:5] == ("dkd-lorad", "DKD student", "lorad", "one step", 7)
    assert table.rows[1][5:] == pytest.approx((0.2, 0.3, 0.2))


def test_arm_grid_rows_are_arms(tmp_path):
    colours = {"photo": (255, 0, 0), "a": (0, 255, 0), "b": (0, 0, 255)}
    for name, colour in colours.items():
        Image.new("RGB", (8, 8), colour).save(tmp_path / f"{name}.png")
    out = arm_grid(tmp_path / "photo.png", {"x": [tmp_path / "a.png"] * 2, "y": [tmp_path / "b.png"] * 2},
                   tmp_path / "grid.png", cell=8)  # fmt: skip
    grid = Image.open(out)
    assert grid.size == (24, 16)
    assert grid.getpixel((0, 8)) == colours["photo"] and grid.getpixel((8, 0)) == colours["a"]
    assert grid.getpixel((20, 12)) == colours["b"]
    with pytest.raises(ValueError, match="same, non-zero number"):
        arm_grid(tmp_path / "photo.png", {"x": [tmp_path / "a.png"], "y": []}, tmp_path / "g.png")


def test_the_fetch_kinds_call_the_loading_libraries(monkeypatch):
    """``hub_dataset``: a dataset folder by snapshot_download; ``transformers``: the model and processor loaded
    (exactly the files they read), then the cached snapshot's folder. Stand-ins record the calls (no network)."""
    import huggingface_hub
    import transformers

    from dkd import fetch as fetch_module
    from dkd.fetch import ModelFiles, fetch

    monkeypatch.setattr(fetch_module, "is_offline", lambda: False)
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, **kw: calls.append(("snapshot", repo, kw)) or "/cache/s")  # fmt: skip
    for cls in ("AutoModel", "AutoProcessor"):
        loader = classmethod(lambda cls, repo, **kw: calls.append((cls.__name__, repo, kw)))
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", loader)
    photos = fetch(ModelFiles("hub_dataset", "google/dreambooth", subfolder="dataset/dog", revision="r1"))
    model = fetch(ModelFiles("transformers", "facebook/dino-vits16", revision="r2"))
    assert (photos, model) == ("/cache/s/dataset/dog", "/cache/s")
    assert calls == [
        (
            "snapshot",
            "google/dreambooth",
            {"repo_type": "dataset", "revision": "r1", "allow_patterns": ["dataset/dog/*"]},
        ),
        ("AutoModel", "facebook/dino-vits16", {"revision": "r2"}),
        ("AutoProcessor", "facebook/dino-vits16", {"revision": "r2"}),
        ("snapshot", "facebook/dino-vits16", {"revision": "r2", "local_files_only": True}),
    ]
    with pytest.raises(ValueError, match="needs subfolder"):
        ModelFiles("hub_dataset", "google/dreambooth")
    with pytest.raises(ValueError, match="filename do"):
        ModelFiles("transformers", "facebook/dino-vits16", filename="x.bin")
