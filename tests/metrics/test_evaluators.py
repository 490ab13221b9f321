"""``dkd.evaluators``, the workflow's own metric path, against independent computations.

No weights can be downloaded: the paper kind runs with clean-fid's Inception builder replaced by
the tiny CNN of ``test_metrics`` and open_clip's ViT-g-14 by its random ViT-S-32; the toy kind with
a random (untrained) digit classifier. Each reference value is recomputed here from the files with
PIL / numpy / scipy / prdc: the 256-pixel crop by array slicing at hand-computed offsets, clean-fid's
``mode="clean"`` resize to 299 (PIL bicubic per float channel) by hand, the tiny models called directly.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from dkd import evaluators
from dkd.metrics.fid import load_stats
from dkd.toy.data import prompt
from dkd.toy.evaluator import DigitClassifier, save_classifier

from .test_clip_score import clip  # noqa: F401  (fixture)
from .test_metrics import TinyCNN, _scipy_fid

# (width, height) -> (left, top) of the centred square, by hand; 303 - 200 = 103 = 3 mod 4: the
# half-to-even rounding of 51.5 puts the extra pixel on the left
SHAPES = {(300, 200): (50, 0), (200, 300): (0, 50), (512, 512): (0, 0), (303, 200): (52, 0)}


def _picture(rng, size, offset=0.0):
    """A smooth random colour field (a 5 x 5 grid, bilinear) with random-colour margins: the crop matters."""
    grid = np.clip(rng.normal(128 + offset, 60, size=(5, 5, 3)), 0, 255).astype(np.uint8)
    pixels = np.array(Image.fromarray(grid).resize(size, Image.BILINEAR))
    margin = rng.integers(0, 256, size=3, dtype=np.uint8)
    pixels[:, :12], pixels[:, -12:], pixels[:12], pixels[-12:] = margin, margin, margin, margin
    return Image.fromarray(pixels)


def _write_set(folder, n, *, seed, offset=0.0, nested=True):
    rng = np.random.default_rng(seed)
    shapes = list(SHAPES)
    for i in range(n):
        sub = folder / (f"part{i % 2}" if nested else "")
        sub.mkdir(parents=True, exist_ok=True)
        _picture(rng, shapes[i % len(shapes)], offset).save(sub / f"{i:05d}.png")
    return folder


def _crop_256(path):
    """The long-side centre square at the SHAPES offsets (numpy slicing), LANCZOS to 256 x 256."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    left, top = SHAPES[(width, height)]
    side = min(width, height)
    return np.asarray(Image.fromarray(pixels[top : top + side, left : left + side]).resize((256, 256), Image.LANCZOS))


def _clean_299(pixels):
    """clean-fid's mode="clean" resize, written out: each channel as a float image, PIL bicubic, clipped."""
    channels = [
        Image.fromarray(pixels[..., c].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC) for c in range(3)
    ]
    return np.stack([np.asarray(c) for c in channels]).clip(0, 255)


def _features(model, arrays):
    with torch.no_grad():
        return model(torch.from_numpy(np.stack([_clean_299(a) for a in arrays])).float()).double().numpy()


def _files(folder):  # the order every metric lists a folder in: sorted relative paths
    return sorted(folder.rglob("*.png"), key=lambda p: p.relative_to(folder).as_posix())


# ---------------------------------------------------------------- preprocessing (paper kind)


def test_paper_prepared_writes_the_256_center_crops_and_resumes(tmp_path):
    src = _write_set(tmp_path / "images", 6, seed=3)
    scratch = tmp_path / "scratch"
    evaluator = evaluators.Evaluator(device="cpu")
    assert evaluator.prepared(src, scratch) == scratch
    sources = _files(src)
    crops = _files(scratch)
    assert [p.relative_to(scratch) for p in crops] == [p.relative_to(src) for p in sources]
    for source, crop in zip(sources, crops):
        written = np.asarray(Image.open(crop))
        assert written.shape == (256, 256, 3)
        np.testing.assert_array_equal(written, _crop_256(source), err_msg=str(source))
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in crops}

    assert evaluator.prepared(src, scratch) == scratch  # idempotent: nothing rewritten
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _files(scratch)} == stamps
    crops[2].unlink()  # a killed job: one crop missing; only that one is written again
    evaluator.prepared(src, scratch)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _files(scratch) if p != crops[2]} == {
        p: stamp for p, stamp in stamps.items() if p != crops[2]
    }
    np.testing.assert_array_equal(np.asarray(Image.open(crops[2])), _crop_256(sources[2]))
    assert not list(scratch.rglob(".*"))

    toy = evaluators.Evaluator(kind="toy", classifier=str(tmp_path / "clf"))
    assert toy.prepared(src, tmp_path / "toy-scratch") == src and not (tmp_path / "toy-scratch").exists()


# ---------------------------------------------------------------- FID and precision/recall (paper kind)

N_REF, N_GEN = 16, 12
BOOTSTRAP = {"samples": 200, "level": 0.9, "seed": 3}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """reference() then image_metrics() of a shifted set and of the reference set itself, with
    clean-fid's Inception builder replaced by TinyCNN."""
    root = tmp_path_factory.mktemp("evaluators")
    ref, gen = _write_set(root / "ref", N_REF, seed=0), _write_set(root / "gen", N_GEN, seed=1, offset=30)
    model, asked = TinyCNN(), []

    def build(mode, device, use_dataparallel=True):
        asked.append((mode, str(device)))
        return model

    paths = {"stats": root / "out" / "ref.npz", "features": root / "out" / "ref.npy"}
    evaluator = evaluators.Evaluator(device="cpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cleanfid.features.build_feature_extractor", build)
        ref_info = evaluators.reference(evaluator, ref, scratch=root / "ref.256", **paths)
        gen_metrics = evaluators.image_metrics(evaluator, gen, scratch=root / "gen.256", **paths)
        self_metrics = evaluators.image_metrics(evaluator, ref, scratch=root / "self.256", **paths)
        boot = evaluators.image_metrics(evaluator, gen, scratch=root / "gen.256", bootstrap=BOOTSTRAP, **paths)
        zero = {**BOOTSTRAP, "samples": 0}
        no_boot = evaluators.image_metrics(evaluator, gen, scratch=root / "gen.256", bootstrap=zero, **paths)
    return {
        "ref_folder": ref,
        "asked": asked,
        "ref_info": ref_info,
        "gen": gen_metrics,
        "self": self_metrics,
        "boot": boot,
        "no_boot": no_boot,
        "ref_features": _features(model, map(_crop_256, _files(ref))),
        "gen_features": _features(model, map(_crop_256, _files(gen))),
        **paths,
    }


def test_reference_saves_the_features_and_stats_of_the_crops(measured):
    expected = measured["ref_features"]
    assert measured["asked"] == [("clean", "cpu")] * 5  # clean-fid's Inception, mode "clean", once a pass
    saved = np.load(measured["features"])
    assert saved.shape == (N_REF, 6)
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-6)
    stats = load_stats(measured["stats"])
    np.testing.assert_allclose(stats["mu"], expected.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["sigma"], np.cov(expected, rowvar=False), rtol=1e-4, atol=1e-9)
    assert (stats["count"], stats["feature_extractor"], stats["mode"]) == (N_REF, "inception_v3", "clean")
    assert measured["ref_info"] == {
        "count": N_REF,
        "feature_extractor": "inception_v3",
        "folder": str(measured["ref_folder"]),
    }


def test_fid_equals_scipy_frechet_distance_of_the_features(measured):
    values, provenance = measured["gen"]["fid"]
    expected = _scipy_fid(measured["gen_features"], measured["ref_features"])
    assert values["fid"] == pytest.approx(expected, rel=1e-5) and expected > 1e-3
    scale = np.trace(np.cov(measured["ref_features"], rowvar=False))
    assert abs(measured["self"]["fid"][0]["fid"]) < 1e-6 * scale  # identical sets
    assert provenance == {
        "feature_extractor": "inception_v3",
        "evaluator": "paper",
        "mode": "clean",
        "clean_fid_version": "0.1.35",
        "count_gen": N_GEN,
        "count_ref": N_REF,
    }


def test_fid_bootstrap_interval_resamples_the_generated_features(measured):
    """The interval recomputed here: the documented draws, each resample's FID by scipy (the features
    recomputed by hand, within float32 rounding of the evaluator's), numpy's linear percentiles shifted
    by the resamples' mean minus the full set's FID."""
    values, provenance = measured["boot"]["fid"]
    plain_values, plain_provenance = measured["gen"]["fid"]
    assert values["fid"] == plain_values["fid"]
    stats = load_stats(measured["stats"])
    ref = {"mu": stats["mu"], "sigma": stats["sigma"]}
    gen = measured["gen_features"]
    draws = np.random.default_rng(BOOTSTRAP["seed"]).integers(0, N_GEN, size=(BOOTSTRAP["samples"], N_GEN))
    fids = []
    for rows in draws:
        sample = gen[rows]
        cov = np.cov(sample, rowvar=False)
        root = scipy.linalg.sqrtm(cov @ ref["sigma"]).real
        fids.append(((sample.mean(0) - ref["mu"]) ** 2).sum() + np.trace(cov + ref["sigma"] - 2 * root))
    shift = np.mean(fids) - values["fid"]
    low, high = np.percentile(fids, [5, 95]) - shift
    assert (values["fid_low"], values["fid_high"]) == pytest.approx((low, high), rel=1e-5)
    assert values["fid_low"] < values["fid_high"] and set(values) == {"fid", "fid_low", "fid_high"}
    assert provenance == {
        **plain_provenance,
        "bootstrap": {**BOOTSTRAP, "method": evaluators.BOOTSTRAP_METHOD},
    }
    assert measured["no_boot"]["fid"] == measured["gen"]["fid"]  # samples 0: as without bootstrap
    assert measured["no_boot"]["pr"] == measured["gen"]["pr"] and measured["boot"]["pr"] == measured["gen"]["pr"]
    assert set(plain_values) == {"fid"} and "bootstrap" not in plain_provenance


def test_precision_recall_equal_prdc_on_equal_size_sets(measured):
    from prdc import compute_prdc

    real, fake = measured["ref_features"], measured["gen_features"]
    rows = np.sort(np.random.default_rng(0).choice(N_REF, N_GEN, replace=False))  # the documented subset rule
    with contextlib.redirect_stdout(io.StringIO()):
        expected = compute_prdc(real_features=real[rows], fake_features=fake, nearest_k=3)
        everything = compute_prdc(real_features=real, fake_features=fake, nearest_k=3)
    values, provenance = measured["gen"]["pr"]
    assert values == pytest.approx({"precision": expected["precision"], "recall": expected["recall"]}, abs=1e-12)
    assert 0 < values["recall"] < 1 and 0 < values["precision"] < 1
    assert everything["recall"] != expected["recall"]  # the subset matters here: a full-set run would show
    assert provenance["density"] == pytest.approx(expected["density"], abs=1e-12)
    assert provenance["coverage"] == pytest.approx(expected["coverage"], abs=1e-12)
    assert {
        k: provenance[k]
        for k in (
            "k",
            "count_real",
            "count_fake",
            "total_real",
            "total_fake",
            "subset_seed",
            "feature_extractor",
            "evaluator",
            "mode",
        )
    } == {
        "k": 3,
        "count_real": N_GEN,
        "count_fake": N_GEN,
        "total_real": N_REF,
        "total_fake": N_GEN,
        "subset_seed": 0,
        "feature_extractor": "inception_v3",
        "evaluator": "paper",
        "mode": "clean",
    }
    same = measured["self"]["pr"][0]
    assert (same["precision"], same["recall"]) == (1.0, 1.0)


# ---------------------------------------------------------------- text-image scores


def test_paper_clip_score_is_the_mean_cosine_of_the_protocol(clip, tmp_path, monkeypatch):  # noqa: F811
    import open_clip
    import torch.nn.functional as F

    asked = []

    def create(name, pretrained=None, device="cpu", **kwargs):
        asked.append((name, pretrained, str(device)))
        return clip["model"], None, clip["preprocess"]

    monkeypatch.setattr(open_clip, "create_model_and_transforms", create)
    folder = _write_set(tmp_path / "images", 3, seed=5, nested=False)
    captions = ["a cat on a sofa", "two boats in a harbour", "a bowl of soup"]
    values, provenance = evaluators.text_image(evaluators.Evaluator(device="cpu"), folder, captions)
    assert asked == [("ViT-g-14", "laion2b_s12b_b42k", "cpu")]
    crops = [Image.fromarray(_crop_256(path)) for path in _files(folder)]
    with torch.no_grad():
        image = F.normalize(clip["model"].encode_image(torch.stack([clip["preprocess"](c) for c in crops])), dim=-1)
        tokens = clip["tokenizer"](["A photo depicts " + c for c in captions])
        text = F.normalize(clip["model"].encode_text(tokens), dim=-1)
    cosines = (image * text).sum(-1).double().numpy()
    assert np.ptp(cosines) > 1e-4
    assert values == pytest.approx({"clip": cosines.mean()}, abs=1e-6)
    assert provenance == {
        "count": 3,
        "model": "ViT-g-14",
        "pretrained": "laion2b_s12b_b42k",
        "prefix": "A photo depicts ",
        "crop": 256,
        "evaluator": "paper",
    }


def test_toy_digit_probability_of_the_prompted_digit(tmp_path):
    torch.manual_seed(0)
    model = DigitClassifier().eval()
    classifier = save_classifier(model, tmp_path / "clf")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    grey = [rng.integers(0, 256, size=(8, 8), dtype=np.uint8) for _ in range(8)]
    for i, pixels in enumerate(grey):
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    with torch.no_grad():  # the saved model itself, on the PNGs' pixels mapped to [-1, 1]
        x = torch.from_numpy(np.stack(grey).astype(np.float64)[:, None] / 127.5 - 1.0).float()
        probs = model(x).double().softmax(1).numpy()
    top = probs.argmax(1)
    digits = [int(d) if i % 2 == 0 else int(d + 1) % 10 for i, d in enumerate(top)]  # half named right
    prompts = [prompt(d, i % 3) for i, d in enumerate(digits)]
    values, provenance = evaluators.text_image(
        evaluators.Evaluator(kind="toy", classifier=str(classifier)), folder, prompts
    )
    expected = probs[np.arange(8), digits].mean()
    assert values == pytest.approx({"digit_prob": expected, "digit_accuracy": 0.5}, abs=1e-6)
    assert provenance == {
        "count": 8,
        "evaluator": "toy",
        "scorer": "toy_digit_classifier",
        "classifier": str(classifier),
    }
    assert evaluators.Evaluator(kind="toy", classifier=str(classifier)).extractor_name == "toy_digit_classifier"
