"""CLIP score (docs/reference.md section 3) against a hand-computed cosine.

No weights can be downloaded here: a randomly initialised open_clip ViT-S-32 stands in.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from dkd.metrics import clip_score, clip_score_folder, image_text_cosines, load_clip


@pytest.fixture(scope="module")
def clip():
    import open_clip

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-S-32", pretrained=None)
    torch.set_flush_denormal(True)  # the random towers produce denormals: 3x slower on CPU without
    yield {"model": model.eval(), "preprocess": preprocess, "tokenizer": open_clip.get_tokenizer("ViT-S-32")}
    torch.set_flush_denormal(False)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)) for _ in range(n)]


CAPTIONS = ["a cat on a sofa", "two boats in a harbour", "a bowl of soup"]


def test_clip_score_equals_hand_computed_cosine(clip, tmp_path):
    images = _images(3)
    with torch.no_grad():  # DMD2's protocol: long-side centre crop, LANCZOS to 256, then CLIP's transform
        cropped = [TF.center_crop(im, min(im.size)).resize((256, 256), Image.LANCZOS) for im in images]
        img = clip["model"].encode_image(torch.stack([clip["preprocess"](im) for im in cropped]))
        txt = clip["model"].encode_text(clip["tokenizer"](["A photo depicts " + c for c in CAPTIONS]))
    cosines = (img / img.norm(dim=-1, keepdim=True) * (txt / txt.norm(dim=-1, keepdim=True))).sum(-1).double()
    per_image = image_text_cosines(images, CAPTIONS, **clip, batch_size=2)  # a full and a partial batch
    np.testing.assert_allclose(per_image, cosines.numpy(), atol=1e-6)
    assert (np.abs(per_image) <= 1).all() and np.ptp(per_image) > 1e-4

    folder = tmp_path / "gen"
    folder.mkdir()
    for i, im in enumerate(images):
        im.save(folder / f"{i:05d}.png")
    result = clip_score_folder(folder, CAPTIONS, **clip, model_name="ViT-S-32", pretrained=None)
    assert result["clip_score"] == pytest.approx(float(cosines.mean()), abs=1e-6) and -1 <= result["clip_score"] <= 1
    assert (result["count"], result["model"], result["pretrained"]) == (3, "ViT-S-32", None)
    assert result["prefix"] == "A photo depicts " and result["crop"] == 256
    with torch.no_grad():
        uncropped = clip["model"].encode_image(torch.stack([clip["preprocess"](im) for im in images]))
    direct = (uncropped / uncropped.norm(dim=-1, keepdim=True) * (txt / txt.norm(dim=-1, keepdim=True))).sum(-1)
    np.testing.assert_allclose(
        image_text_cosines(images, CAPTIONS, **clip, crop=None), direct.double().numpy(), atol=1e-6
    )
    assert np.abs(direct.double().numpy() - per_image).max() > 1e-5  # the crop matters for a 64 x 48 image
    (folder / "00001.png").unlink()
    with pytest.raises(ValueError, match="2 images for 3 captions"):
        clip_score_folder(folder, CAPTIONS, **clip)
    with pytest.raises(ValueError, match="one caption per image"):
        clip_score(images, CAPTIONS[:2], **clip)


def test_clip_score_prefix_is_applied(clip, tmp_path):
    images = _images(2, seed=1)
    out = tmp_path / "clip.json"
    default = clip_score(images, CAPTIONS[:2], **clip, out_file=out)
    bare = clip_score(images, CAPTIONS[:2], **clip, prefix="")
    assert abs(default["clip_score"] - bare["clip_score"]) > 1e-6 and bare["prefix"] == ""
    assert json.loads(out.read_text()) == default and default["model"] == "ViT-g-14"


def test_load_clip_asks_for_the_protocol_model(clip, monkeypatch):
    import open_clip

    asked = []

    def fake_create(name, pretrained=None, device="cpu", **kwargs):
        asked.append((name, pretrained))
        return clip["model"].train(), None, clip["preprocess"]

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    model, preprocess, tokenizer = load_clip(device="cpu")
    assert asked == [("ViT-g-14", "laion2b_s12b_b42k")] and not model.training
    assert preprocess is clip["preprocess"] and tokenizer(["x"]).shape == (1, 77)
