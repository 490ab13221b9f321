"""The toy classifier: accuracy on the held-out split, the clean-fid feature path, the prompt score."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from dkd.toy.data import load_split, prompt, write_reference_images
from dkd.toy.evaluator import (
    ClassifierConfig,
    DigitFeatures,
    accuracy,
    load_classifier,
    prompt_agreement,
    read_images,
    save_classifier,
    train_classifier,
)


@pytest.fixture(scope="module")
def classifier():
    return train_classifier(ClassifierConfig(epochs=8))


def test_held_out_accuracy_at_least_95_percent(classifier):
    assert accuracy(classifier, load_split("test")) >= 0.95


def test_features_through_clean_fid_match_direct_features(classifier, tmp_path):
    """clean-fid's loader (PNG, 299 px bicubic resize) then DigitFeatures gives the classifier's own
    features of the 8x8 images, up to the resize round trip."""
    from dkd.metrics.fid import folder_features

    split = load_split("test")
    subset = type(split)(split.images[:40], split.labels[:40])
    write_reference_images(tmp_path, subset)
    through = folder_features(tmp_path, model=DigitFeatures(classifier), device="cpu", batch_size=16)
    direct = classifier.features(read_images(sorted(tmp_path.glob("*.png")))).numpy()
    assert through.shape == direct.shape == (40, 64)
    np.testing.assert_allclose(through, direct, atol=0.05 * np.abs(direct).max())
    # and the round trip keeps every classification
    through_labels = classifier.head(torch.from_numpy(through)).argmax(1)
    assert torch.equal(through_labels, classifier.head(torch.from_numpy(direct)).argmax(1))


def test_prompt_agreement_is_the_mean_probability_of_the_named_digit(classifier):
    split = load_split("test")
    images, labels = split.images[:30], split.labels[:30]
    shifted = (labels + 1) % 10
    prompts = [prompt(int(d), i) for i, d in enumerate(shifted)]
    probs = torch.softmax(classifier(images).double(), dim=1)
    expected = probs[torch.arange(30), shifted].mean().item()
    result = prompt_agreement(classifier, images, prompts)
    assert result["digit_prob"] == pytest.approx(expected, abs=1e-6)
    assert result["digit_accuracy"] == pytest.approx((probs.argmax(1) == shifted).double().mean().item())
    assert result["count"] == 30
    with pytest.raises(ValueError, match="images but"):
        prompt_agreement(classifier, images, prompts[:5])


def test_save_load_round_trip(classifier, tmp_path):
    save_classifier(classifier, tmp_path / "clf", accuracy=0.99)
    loaded = load_classifier(tmp_path / "clf")
    x = load_split("test").images[:5]
    assert torch.equal(loaded(x), classifier(x))
    assert not list((tmp_path / "clf").glob(".*"))
    with pytest.raises(FileNotFoundError, match="toy_evaluator"):
        load_classifier(tmp_path / "missing")


def test_weights_file_round_trip_and_the_shipped_evaluator(classifier, tmp_path):
    from safetensors import safe_open

    from dkd.backbones import config_dir
    from dkd.toy.evaluator import load_classifier_weights, save_classifier_weights

    path = save_classifier_weights(classifier, tmp_path / "evaluator.safetensors", ClassifierConfig(epochs=8))
    x = load_split("test").images[:5]
    assert torch.equal(load_classifier_weights(path)(x), classifier(x))
    with safe_open(str(path), "pt") as handle:
        assert json.loads(handle.metadata()["config"])["epochs"] == 8
    shipped = config_dir() / "toy" / "evaluator.safetensors"  # what every machine scores with
    assert accuracy(load_classifier_weights(shipped), load_split("test")) >= 0.95
    with safe_open(str(shipped), "pt") as handle:
        assert json.loads(handle.metadata()["config"]) == dataclasses.asdict(ClassifierConfig())
