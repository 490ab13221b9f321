"""The toy's digits, split and prompts."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dkd.toy.data import (
    TEMPLATES,
    WORDS,
    all_prompts,
    labels_of,
    load_split,
    prompt,
    prompt_digit,
    prompt_list,
    to_uint8,
    write_reference_images,
)


def test_split_is_stratified_disjoint_and_complete():
    train, test = load_split("train"), load_split("test")
    digits = load_digits()
    assert len(train) + len(test) == len(digits.target) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.min() >= -1 and train.images.max() <= 1
    # every digit keeps its share (stratified): within one image of 20% per class
    for d in range(10):
        total = int((digits.target == d).sum())
        assert abs(int((test.labels == d).sum()) - 0.2 * total) <= 1
    # the two parts are disjoint: no image of the test part appears in the training part
    train_rows = {tuple(row) for row in train.images.reshape(len(train), -1).tolist()}
    overlap = sum(tuple(row) in train_rows for row in test.images.reshape(len(test), -1).tolist())
    duplicates = len(digits.data) - len({tuple(r) for r in digits.data.tolist()})
    assert overlap <= duplicates
    # same split twice
    assert torch.equal(load_split("test").labels, test.labels)


def test_model_space_maps_grey_levels_to_unit_interval():
    split = load_split("test")
    digits = load_digits()
    # 0 -> -1, 16 -> 1, 8 -> 0; uint8 round trip equals (v / 16) * 255 rounded
    values = np.unique(digits.data)
    assert values.min() == 0 and values.max() == 16
    grey = to_uint8(split.images)
    expected = np.round((split.images.numpy()[:, 0] + 1) * 127.5)
    np.testing.assert_array_equal(grey, expected.astype(np.uint8))


@pytest.mark.parametrize("digit", range(10))
def test_every_wording_reads_back_its_digit(digit):
    for template in range(len(TEMPLATES)):
        assert prompt_digit(prompt(digit, template)) == digit
    assert prompt_digit(f"A Handwritten Digit {WORDS[digit].upper()}") == digit


def test_prompt_lists():
    prompts = prompt_list(50, seed=3)
    assert labels_of(prompts).tolist() == [i % 10 for i in range(50)]
    assert prompts == prompt_list(50, seed=3) and prompts != prompt_list(50, seed=4)
    assert len(set(all_prompts())) == 10 * len(TEMPLATES)
    with pytest.raises(ValueError, match="names no digit"):
        prompt_digit("a photo of a cat")
    with pytest.raises(ValueError, match="0..9"):
        prompt(10)


def test_reference_images_are_the_split(tmp_path):
    from PIL import Image

    split = load_split("test")
    paths = write_reference_images(tmp_path, split)
    assert len(paths) == len(split)
    with Image.open(paths[3]) as image:
        assert image.size == (8, 8) and image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), to_uint8(split.images[3:4])[0])
