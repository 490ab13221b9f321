"""HPSv2 (docs/reference.md section 4) with a tiny random open_clip model, against hand computations.

The real ViT-H-14 and its HPS checkpoint cannot be downloaded here; the scorer's steps are
checked one by one: the preprocessing against pixel values worked out by hand, the score
against ``100 * cosine_similarity`` of the model's own ``encode_image`` / ``encode_text``
computed image by image, the benchmark summary against numpy.
"""

from __future__ import annotations

import json

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image

from dkd.metrics.hps import (
    CHECKPOINTS,
    OPENAI_MEAN,
    OPENAI_STD,
    HPSPreprocess,
    checkpoint_path,
    hps_benchmark,
    hps_scores,
    load_hps,
    read_prompts,
    read_state_dict,
    style_summary,
)

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PROMPTS = ["a red fox in the snow", "concept art of a castle", "an oil painting of a harbour",
           "a photo of a tram at night", "anime girl with an umbrella"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY).eval()
    return {"model": model, "preprocess": HPSPreprocess(32), "tokenizer": open_clip.get_tokenizer("ViT-H-14")}


def _random_image(seed, size=(48, 40)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _reference_score(tiny, image, prompt):
    """100 x cosine of one image and one prompt, straight from the model (no batching, no matmul)."""
    with torch.no_grad():
        image_emb = tiny["model"].encode_image(tiny["preprocess"](image.convert("RGB"))[None])
        text_emb = tiny["model"].encode_text(tiny["tokenizer"]([prompt]))
    return 100 * F.cosine_similarity(image_emb, text_emb).item()


def _norm(value):
    """A pixel value in [0, 1] after Normalize(OpenAI mean, std), per channel."""
    return (value - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)


def test_preprocess_scales_the_long_side_pads_black_and_normalises():
    # 40 x 20 (w x h) to 16: scale 0.4 -> 16 x 8, pad 8 rows: 4 above, 4 below
    out = HPSPreprocess(16)(Image.new("RGB", (40, 20), (255, 128, 0)))
    assert out.shape == (3, 16, 16)
    content, pad = _norm(np.array([255, 128, 0]) / 255), _norm(0.0)
    for row, expected in [(0, pad), (3, pad), (4, content), (11, content), (12, pad), (15, pad)]:
        np.testing.assert_allclose(out[:, row, :].numpy(), np.tile(expected[:, None], (1, 16)), atol=1e-5)
    # 20 x 30 to 16: new width round(20 * 16 / 30) = round(10.67) = 11, pad 5 columns: 2 left, 3 right
    out = HPSPreprocess(16)(Image.new("RGB", (20, 30), (10, 200, 90)))
    is_pad = np.isclose(out[0].numpy(), _norm(0.0)[0], atol=1e-5).all(axis=0)
    assert is_pad.tolist() == [True] * 2 + [False] * 11 + [True] * 3
    # already 16 on the long side: no resize, still padded to a square (3 + 3 rows); RGBA -> RGB
    out = HPSPreprocess(16)(Image.new("RGBA", (16, 10), (0, 0, 255, 7)))
    assert out.shape == (3, 16, 16)
    np.testing.assert_allclose(out[:, 8, 5].numpy(), _norm(np.array([0, 0, 1.0])), atol=1e-6)
    np.testing.assert_allclose(out[:, 2, 5].numpy(), _norm(0.0), atol=1e-6)
    with pytest.raises(ValueError, match="size"):
        HPSPreprocess(0)


def test_score_is_100_times_the_cosine_of_the_model_features(tiny, tmp_path):
    images = [_random_image(i, size) for i, size in enumerate([(48, 40), (32, 32), (20, 64), (64, 64), (33, 17)])]
    expected = np.array([_reference_score(tiny, im, p) for im, p in zip(images, PROMPTS)])
    got = hps_scores(images, PROMPTS, batch_size=2, **tiny)  # batches of 2, 2, 1
    assert got.dtype == np.float64 and got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert np.ptp(got) > 1  # the random model does separate the pairs
    paths = []
    for i, im in enumerate(images):
        im.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    np.testing.assert_allclose(hps_scores(paths, PROMPTS, batch_size=5, **tiny), got, atol=1e-4)
    with pytest.raises(ValueError, match="one prompt per image"):
        hps_scores(images, PROMPTS[:4], **tiny)


def test_style_summary_mean_and_hpsv2_chunk_std():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    summary = style_summary(scores, chunk=2)  # chunk means 1.5, 3.5, 5 (the last chunk is short)
    mean_of_means = (1.5 + 3.5 + 5.0) / 3
    expected_std = np.sqrt(((1.5 - mean_of_means) ** 2 + (3.5 - mean_of_means) ** 2 + (5 - mean_of_means) ** 2) / 3)
    assert summary == {"mean": 3.0, "count": 5, "chunk_std": pytest.approx(expected_std)}
    assert style_summary(np.full(800, 26.5))["chunk_std"] == 0.0


def _write_benchmark(root, counts, suffixes=(".jpg", ".png")):
    """``root/images/<style>/<i:05d>.jpg|.png`` and ``root/prompts/<style>.txt``; returns the pairs."""
    images, prompts_dir = root / "images", root / "prompts"
    prompts_dir.mkdir(parents=True)
    layout = {}
    for k, (style, n) in enumerate(counts.items()):
        prompts = [f"{style} prompt number {i}" for i in range(n)]
        (prompts_dir / f"{style}.txt").write_text("\n".join(prompts) + "\n")
        (images / style).mkdir(parents=True)
        layout[style] = []
        for i, prompt in enumerate(prompts):
            path = images / style / f"{i:05d}{suffixes[(i + k) % len(suffixes)]}"
            _random_image(100 * k + i).save(path)
            layout[style].append((path, prompt))
    return images, prompts_dir, layout


def test_benchmark_per_style_means_and_average(tiny, tmp_path):
    counts = {"anime": 3, "concept-art": 2, "paintings": 4, "photo": 1}
    images, prompts_dir, layout = _write_benchmark(tmp_path, counts)
    out = tmp_path / "hps.json"
    result = hps_benchmark(images, prompts_dir, **tiny, version="v2.0", checkpoint="/x/HPS_v2_compressed.pt",
                           batch_size=2, out_file=out, progress=False)  # fmt: skip
    per_image = {s: [_reference_score(tiny, Image.open(path), p) for path, p in pairs] for s, pairs in layout.items()}
    for style, scores in per_image.items():
        assert result["per_style"][style] == pytest.approx(np.mean(scores), abs=1e-4)
        assert result["count"][style] == counts[style]
    assert result["average"] == pytest.approx(np.mean([np.mean(s) for s in per_image.values()]), abs=1e-4)
    assert (result["version"], result["model"], result["checkpoint"]) == ("v2.0", "ViT-H-14", "HPS_v2_compressed.pt")
    assert result["styles"] == ["anime", "concept-art", "paintings", "photo"] and result["scale"] == 100
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    # a JSON prompt list (the hub's benchmark/<style>.json) is read when there is no .txt
    (prompts_dir / "photo.txt").unlink()
    (prompts_dir / "photo.json").write_text(json.dumps(["photo prompt number 0"]))
    again = hps_benchmark(images, prompts_dir, **tiny, version="v2.0", checkpoint="HPS_v2_compressed.pt",
                          styles=["photo"], progress=False)  # fmt: skip
    assert again["per_style"]["photo"] == pytest.approx(result["per_style"]["photo"], abs=1e-5)
    assert again["average"] == again["per_style"]["photo"]


def test_prompt_lines_split_on_newlines_only(tmp_path):
    (tmp_path / "photo.txt").write_bytes("a\u2028b \x85c\r\nd\n".encode("utf-8"))  # CRLF and exotic separators
    assert read_prompts(tmp_path, "photo") == ["a\u2028b \x85c", "d"]
    (tmp_path / "anime.txt").write_text("")
    with pytest.raises(ValueError, match="anime.txt.*empty"):
        read_prompts(tmp_path, "anime")


class NeverCalled(torch.nn.Module):
    def parameters(self, recurse=True):
        raise AssertionError("the model ran although the layout is broken")


@pytest.mark.parametrize(
    "damage, error, match",
    [
        (lambda im, pr: (im / "paintings" / "00001.jpg").unlink(), ValueError, r"'paintings'.*1 missing.*00001"),
        (lambda im, pr: _random_image(9).save(im / "photo" / "00001.png"), ValueError, r"'photo'.*beyond.*00001.png"),
        (lambda im, pr: _random_image(9).save(im / "anime" / "00000.png"), ValueError, r"'anime'.*two images.*00000"),
        (lambda im, pr: (pr / "anime.txt").write_text("a\n\nc\n"), ValueError, r"anime.txt.*1 \(line 2\) is blank"),
        (lambda im, pr: (pr / "photo.txt").unlink(), FileNotFoundError, r"'photo'.*photo.txt.*photo.json"),
        (lambda im, pr: (pr / "photo.txt").write_text("p\nq\n"), ValueError, r"'photo'.*1 missing.*00001"),
    ],
)
def test_layout_errors_name_the_style_and_file_before_anything_is_scored(tmp_path, damage, error, match):
    counts = {"anime": 3, "concept-art": 2, "paintings": 4, "photo": 1}
    images, prompts_dir, _ = _write_benchmark(tmp_path, counts, suffixes=(".jpg",))
    damage(images, prompts_dir)
    with pytest.raises(error, match=match):
        hps_benchmark(images, prompts_dir, model=NeverCalled(), preprocess=None, tokenizer=None, version="v2.0",
                      checkpoint="HPS_v2_compressed.pt", progress=False)  # fmt: skip


def test_missing_checkpoint_offline_says_what_to_download_and_where(monkeypatch):
    asked = []

    def offline(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        raise LocalEntryNotFoundError("cannot find the requested files in the disk cache (offline)")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    for version, name in CHECKPOINTS.items():
        with pytest.raises(FileNotFoundError) as info:
            load_hps(version)
        message = str(info.value)
        assert f"https://huggingface.co/xswu/HPSv2/resolve/main/{name}" in message
        assert f"checkpoint='/path/to/{name}'" in message and "HF_HOME" in message
    assert asked == [("xswu/HPSv2", "HPS_v2_compressed.pt"), ("xswu/HPSv2", "HPS_v2.1_compressed.pt")]


def test_real_hub_client_in_offline_mode_gives_the_same_message(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"HPS_v2_compressed.pt is not in the Hugging Face cache"):
        checkpoint_path("v2.0")


def test_checkpoint_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="v2.0.*v2.1"):
        checkpoint_path("v3")
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        checkpoint_path("v2.0", tmp_path / "nowhere.pt")
    (tmp_path / "HPS_v2.1_compressed.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="is the HPS v2.1 file but version='v2.0'"):
        checkpoint_path("v2.0", tmp_path / "HPS_v2.1_compressed.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt.*not a readable"):
        read_state_dict(tmp_path / "garbage.pt")
    torch.save({"state_dict": {"w": 1}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="odd.pt.*no state dict"):
        read_state_dict(tmp_path / "odd.pt")


def test_load_hps_loads_the_checkpoint_strictly(tiny, tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-hps-test.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "configs")
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": tiny["model"].state_dict()}, path)
    hps = load_hps("v2.1", path, device="cpu", model_name="tiny-hps-test")
    assert hps.labels == {"version": "v2.1", "checkpoint": "HPS_v2.1_compressed.pt", "model_name": "tiny-hps-test"}
    assert hps.preprocess == HPSPreprocess(32) and not hps.model.training
    images = [_random_image(i) for i in range(3)]
    np.testing.assert_allclose(hps_scores(images, PROMPTS[:3], **hps.scoring),
                               hps_scores(images, PROMPTS[:3], **tiny), atol=1e-5)  # fmt: skip
    wrong = open_clip.model.CLIP(**{**TINY, "embed_dim": 8})
    torch.save({"state_dict": wrong.state_dict()}, tmp_path / "HPS_v2_compressed.pt")
    with pytest.raises(ValueError, match="HPS_v2_compressed.pt.*does not fit open_clip tiny-hps-test"):
        load_hps("v2.0", tmp_path / "HPS_v2_compressed.pt", device="cpu", model_name="tiny-hps-test")
