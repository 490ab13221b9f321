"""Image metrics (docs/reference.md section 3) against closed forms and hand computations.

No weights can be downloaded here: FID / P-R run clean-fid's real feature path with a tiny
random CNN (the CLIP score: ``test_clip_score.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision.transforms.functional as TF
from cleanfid.fid import frechet_distance as cleanfid_frechet
from PIL import Image
from torch import nn

from dkd.metrics import (
    center_crop_resize,
    compute_fid,
    equal_size_subsets,
    feature_stats,
    folder_features,
    frechet_distance,
    list_images,
    load_stats,
    precision_recall,
    precision_recall_equal_sizes,
    precision_recall_folders,
    preprocess_folder,
    reference_stats,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


class TinyCNN(nn.Module):
    """A random 6-feature extractor on clean-fid's float [0, 255] (B, 3, 299, 299) batches."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, kernel_size=8, stride=8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        assert x.shape[1:] == (3, 299, 299) and x.dtype == torch.float32
        return torch.tanh(self.conv(x / 127.5 - 1)).mean(dim=(2, 3))


def _write_images(folder, n, *, seed, offset=0.0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = np.clip(rng.normal(128 + offset, 60, size=(24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    return {"a": _write_images(root / "a", 20, seed=0), "b": _write_images(root / "b", 20, seed=1, offset=60)}


def _scipy_fid(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


# ---------------------------------------------------------------- preprocessing


def test_center_crop_resize_keeps_the_centred_square():
    img = Image.new("RGB", (300, 200), BLUE)  # the centred square is x in [50, 250)
    img.paste(GREEN, (0, 0, 50, 200))
    img.paste(GREEN, (250, 0, 300, 200))
    img.paste(RED, (140, 90, 160, 110))  # marker in the centre
    out = np.asarray(center_crop_resize(img))
    assert out.shape == (256, 256, 3)
    assert out[:, :, 1].max() == 0  # both green strips cropped away, even a one-pixel shift shows
    assert tuple(out[128, 128]) == RED and tuple(out[128, 3]) == BLUE and tuple(out[128, 252]) == BLUE
    tall = np.asarray(center_crop_resize(Image.new("L", (30, 70), 7), size=16))
    assert tall.shape == (16, 16, 3) and (tall == 7).all()


@pytest.mark.parametrize("long_side", [257, 258, 259, 261, 263])
def test_center_crop_offsets_round_as_torchvision(long_side):
    """torchvision's center_crop (DMD2's evaluation) as the reference; by hand: the column of a
    one-pixel marker at x = round((w - 256) / 2) (half to even) becomes the crop's first column."""
    rng = np.random.default_rng(long_side)
    img = Image.fromarray(rng.integers(0, 255, (256, long_side, 3), dtype=np.uint8))
    expected = TF.center_crop(img, 256).resize((256, 256), Image.LANCZOS)
    assert np.array_equal(np.asarray(center_crop_resize(img)), np.asarray(expected))
    left = {257: 0, 258: 1, 259: 2, 261: 2, 263: 4}[long_side]
    assert np.array_equal(np.asarray(center_crop_resize(img, 256))[:, 0], np.asarray(img)[:, left])


def test_list_and_preprocess_folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 20), RED).save(src / "b.JPG")
    Image.new("RGB", (20, 30), BLUE).save(src / "a.webp")
    Image.new("RGB", (20, 20), BLUE).save(src / "sub" / "c.png")
    Image.new("RGB", (20, 20), BLUE).save(src / ".a.png.tmp.png")  # an atomic write in progress
    (src / "notes.txt").write_text("x")
    assert [p.name for p in list_images(src)] == ["a.webp", "b.JPG"]
    assert [p.name for p in list_images(src, recursive=True)] == ["a.webp", "b.JPG", "c.png"]
    dst = tmp_path / "dst"
    assert preprocess_folder(src, dst, size=32, recursive=True) == {
        "count": 3,
        "written": 3,
        "skipped": 0,
        "removed": 0,
    }
    outs = list_images(dst, recursive=True)
    assert [p.relative_to(dst).as_posix() for p in outs] == ["a.png", "b.png", "sub/c.png"]
    assert all(Image.open(p).size == (32, 32) for p in outs)
    inode = (dst / "b.png").stat().st_ino
    assert preprocess_folder(src, dst, size=32, recursive=True) == {
        "count": 3,
        "written": 0,
        "skipped": 3,
        "removed": 0,
    }
    assert (dst / "b.png").stat().st_ino == inode  # not rewritten
    assert not [p for p in dst.rglob(".*")]
    # the source set changes (a model trained again): a newer image is cropped again, a gone one's crop removed
    Image.new("RGB", (40, 20), BLUE).save(src / "b.JPG")
    os.utime(src / "b.JPG", ns=((dst / "b.png").stat().st_mtime_ns + 10**9,) * 2)
    (src / "sub" / "c.png").unlink()
    assert preprocess_folder(src, dst, size=32, recursive=True) == {
        "count": 2,
        "written": 1,
        "skipped": 1,
        "removed": 1,
    }
    assert [p.relative_to(dst).as_posix() for p in list_images(dst, recursive=True)] == ["a.png", "b.png"]
    assert np.asarray(Image.open(dst / "b.png"))[16, 16].argmax() == 2  # blue now (a JPEG: not exactly 255)
    (src / "sub" / "c.png").parent.rmdir()
    Image.new("RGB", (20, 20), RED).save(src / "b.png")
    with pytest.raises(ValueError, match="both map to"):
        preprocess_folder(src, tmp_path / "dst2")


# ---------------------------------------------------------------- FID


def test_frechet_distance_closed_form_and_scipy():
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 4 + 9 - 2 * 6, abs=1e-12)
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(50, 5)), rng.normal(1.0, 2.0, size=(60, 5))
    expected = _scipy_fid(f1, f2)
    ours = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert ours == pytest.approx(expected, rel=1e-9)
    with warnings.catch_warnings():  # clean-fid passes scipy's deprecated disp=False
        warnings.simplefilter("ignore", DeprecationWarning)
        assert ours == pytest.approx(cleanfid_frechet(*feature_stats(f1), *feature_stats(f2)), rel=1e-12)
    with pytest.raises(ValueError, match="shapes disagree"):
        frechet_distance(np.zeros(5), np.eye(5), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(np.zeros((1, 3)))


def test_fid_of_a_set_against_itself_and_scipy(sets, tmp_path):
    model = TinyCNN()
    feats_a = folder_features(sets["a"], model=model, device="cpu")
    feats_b = folder_features(sets["b"], model=model, device="cpu")
    assert feats_a.shape == (20, 6) and model.calls == 2  # batches of 32: one per folder
    scale = np.trace(np.cov(feats_a, rowvar=False))
    same = compute_fid(sets["a"], sets["a"], feature_extractor=model, extractor_name="tiny", device="cpu")
    assert abs(same["fid"]) < 1e-6 * scale
    out = tmp_path / "fid.json"
    diff = compute_fid(sets["b"], sets["a"], feature_extractor=model, extractor_name="tiny", device="cpu",
                       batch_size=7, out_file=out)  # fmt: skip
    expected = _scipy_fid(feats_b, feats_a)
    assert diff["fid"] == pytest.approx(expected, rel=1e-6) and diff["fid"] > 100 * abs(same["fid"]) + 1e-3
    assert json.loads(out.read_text()) == diff
    assert {k: diff[k] for k in ("count_gen", "count_ref", "feature_extractor", "mode", "clean_fid_version")} == {
        "count_gen": 20, "count_ref": 20, "feature_extractor": "tiny", "mode": "clean", "clean_fid_version": "0.1.35",
    }  # fmt: skip


def test_reference_stats_cached_once_and_checked(sets, tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(sets["a"], ref)
    cache = tmp_path / "stats" / "ref.npz"
    model = TinyCNN()
    first = compute_fid(sets["b"], ref, ref_stats=cache, feature_extractor=model, extractor_name="tiny", device="cpu")
    stats = load_stats(cache)
    assert stats["count"] == 20 and stats["feature_extractor"] == "tiny" and stats["mode"] == "clean"
    mu, sigma = feature_stats(folder_features(sets["a"], model=model, device="cpu"))
    np.testing.assert_allclose(stats["mu"], mu, rtol=1e-12)
    np.testing.assert_allclose(stats["sigma"], sigma, rtol=1e-12)
    assert [p.name for p in cache.parent.iterdir()] == ["ref.npz"]  # no temporary file left
    before = cache.stat()

    extra = ref / "99999.png"
    shutil.copy(ref / "00000.png", extra)
    with pytest.raises(ValueError, match="20 images.*21 images"):
        reference_stats(ref, cache, feature_extractor=model, extractor_name="tiny", device="cpu")
    extra.unlink()
    with pytest.raises(ValueError, match="feature extractor 'tiny'.*not 'other'"):
        compute_fid(sets["b"], ref, ref_stats=cache, feature_extractor=model, extractor_name="other", device="cpu")
    with pytest.raises(ValueError, match="mode"):
        reference_stats(ref, cache, feature_extractor=model, extractor_name="tiny", mode="legacy_pytorch")

    shutil.rmtree(ref)  # the reference images are never read again
    model.calls = 0
    for folder in (ref, None):
        again = compute_fid(sets["b"], folder, ref_stats=cache, feature_extractor=model, extractor_name="tiny",
                            device="cpu")  # fmt: skip
        assert again == first
    assert model.calls == 2  # only the generated set's batches
    after = cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        compute_fid(sets["b"], ref_stats=tmp_path / "missing.npz", feature_extractor=model, device="cpu")


def test_default_extractor_is_clean_fid_inception(sets, monkeypatch):
    calls = []

    def fake_build(mode, device, use_dataparallel=True):
        calls.append(mode)
        return TinyCNN()

    monkeypatch.setattr("cleanfid.features.build_feature_extractor", fake_build)
    result = compute_fid(sets["a"], sets["b"], device="cpu")
    assert calls == ["clean"] and result["feature_extractor"] == "inception_v3" and result["fid"] > 0
    with pytest.raises(ValueError, match="mode must be one of"):
        compute_fid(sets["a"], sets["b"], mode="dirty", device="cpu")


# ---------------------------------------------------------------- precision / recall

LINE = np.stack([np.arange(10.0), np.zeros(10)], axis=1)  # k=3 radii: 3 at the two ends, 2 inside
FAR = np.array([1000.0, 0.0])


def _brute_force(real, fake, k):
    def radii(x):
        return np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)[:, k]

    d = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    return (d < radii(real)[:, None]).any(0).mean(), (d < radii(fake)[None]).any(1).mean()


def test_precision_recall_known_answers():
    two = np.concatenate([LINE, LINE + FAR])
    same = precision_recall(two, two)
    assert (same["precision"], same["recall"], same["k"]) == (1.0, 1.0, 3)
    far = precision_recall(two, two + [0.0, 1e4])
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    one = precision_recall(two, LINE)  # fake covers only the first of the two real clusters
    assert one["precision"] == 1.0 and one["recall"] == 0.5 and (one["count_real"], one["count_fake"]) == (20, 10)
    half = precision_recall(LINE, np.concatenate([LINE, LINE + FAR]))
    assert half["precision"] == 0.5 and half["recall"] == 1.0
    shifted = LINE[:5] + [0.0, 1.5]  # 1.5 from the line: inside the k=3 balls (radius >= 2), outside k=1 (1)
    assert precision_recall(LINE, shifted)["precision"] == 1.0
    assert precision_recall(LINE, shifted, k=1)["precision"] == 0.0


def test_precision_recall_matches_brute_force_and_checks_input():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 4)), rng.normal(0.5, 1.0, size=(30, 4))
    precision, recall = _brute_force(real, fake, 3)
    result = precision_recall(real, fake)
    assert 0 < precision < 1 and 0 < recall < 1
    assert (result["precision"], result["recall"]) == pytest.approx((precision, recall), abs=1e-12)
    with pytest.raises(ValueError, match="at least k \\+ 2"):
        precision_recall(real, fake[:4])
    with pytest.raises(ValueError, match="differ in dimension"):
        precision_recall(real, fake[:, :3])


def test_precision_recall_on_equal_size_sets():
    """The larger set is cut to the smaller one's size by a seeded random subset of its rows (in their
    order); the scores are those of prdc on the two subsets, with the full sizes recorded."""
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(50, 4)), rng.normal(0.3, 1.0, size=(20, 4))
    sub_real, same_fake = equal_size_subsets(real, fake, seed=4)
    assert same_fake is fake or np.array_equal(same_fake, fake)
    rows = [int(np.flatnonzero((real == row).all(1))[0]) for row in sub_real]
    assert len(rows) == 20 and rows == sorted(set(rows))  # distinct rows of real, kept in order
    assert np.array_equal(equal_size_subsets(real, fake, seed=4)[0], sub_real)
    assert not np.array_equal(equal_size_subsets(real, fake, seed=5)[0], sub_real)
    assert np.array_equal(equal_size_subsets(fake, real, seed=4)[1], sub_real)  # symmetric in the two sets
    result = precision_recall_equal_sizes(real, fake, seed=4)
    precision, recall = _brute_force(sub_real, fake, 3)
    assert (result["precision"], result["recall"]) == pytest.approx((precision, recall), abs=1e-12)
    assert (
        result["count_real"],
        result["count_fake"],
        result["total_real"],
        result["total_fake"],
        result["subset_seed"],
    ) == (20, 20, 50, 20, 4)


def test_precision_recall_folders_use_the_fid_features(sets, tmp_path):
    model = TinyCNN()
    out = tmp_path / "pr.json"
    result = precision_recall_folders(sets["a"], sets["a"], feature_extractor=model, extractor_name="tiny",
                                      device="cpu", out_file=out)  # fmt: skip
    assert (result["precision"], result["recall"], result["feature_extractor"]) == (1.0, 1.0, "tiny")
    assert json.loads(out.read_text()) == result
    feats_a = folder_features(sets["a"], model=model, device="cpu")
    feats_b = folder_features(sets["b"], model=model, device="cpu")
    cross = precision_recall_folders(sets["a"], sets["b"], feature_extractor=model, device="cpu")
    expected = precision_recall(feats_a, feats_b)
    assert {k: cross[k] for k in expected} == expected and cross["feature_extractor"] == "TinyCNN"
