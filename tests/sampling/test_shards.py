"""Sharded generation: seeds per image index, skipping, shards, fingerprints."""

from __future__ import annotations

import os

import pytest

from dkd.backbones.tiny import save_tiny_backbone
from dkd.io import image_path
from dkd.sampling import OneStepPipeline, generate_shard

PROMPTS = [f"a handwritten digit {d}" for d in range(7)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=5)


@pytest.fixture(scope="module")
def one_step(folder):
    return OneStepPipeline.from_pretrained(folder, backbone="tiny-sd")


def test_shards_equal_one_full_run_and_existing_images_are_skipped(one_step, tmp_path):
    full = generate_shard(one_step, PROMPTS, tmp_path / "full", seed=100, batch_size=3, progress=False)
    assert full == {"written": 7, "skipped": 0, "start": 0, "end": 7}
    generate_shard(one_step, PROMPTS, tmp_path / "sharded", start=4, end=7, seed=100, batch_size=2, progress=False)
    generate_shard(one_step, PROMPTS, tmp_path / "sharded", start=0, end=4, seed=100, batch_size=4, progress=False)
    for i in range(7):
        assert image_path(tmp_path / "full", i).read_bytes() == image_path(tmp_path / "sharded", i).read_bytes()
    stamp = os.stat(image_path(tmp_path / "full", 2)).st_mtime_ns
    again = generate_shard(one_step, PROMPTS, tmp_path / "full", seed=100, progress=False)
    assert again["written"] == 0 and again["skipped"] == 7
    assert os.stat(image_path(tmp_path / "full", 2)).st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "full").iterdir() if p.name.startswith(".")]


def test_seed_changes_the_image_and_bad_ranges_fail(one_step, tmp_path):
    generate_shard(one_step, PROMPTS[:1], tmp_path / "a", seed=0, progress=False)
    generate_shard(one_step, PROMPTS[:1], tmp_path / "b", seed=1, progress=False)
    assert image_path(tmp_path / "a", 0).read_bytes() != image_path(tmp_path / "b", 0).read_bytes()
    with pytest.raises(ValueError, match="start"):
        generate_shard(one_step, PROMPTS, tmp_path / "c", start=5, end=3, progress=False)


def test_a_new_fingerprint_regenerates_only_its_range(one_step, tmp_path):
    out = tmp_path / "fp"
    generate_shard(one_step, PROMPTS, out, start=0, end=3, seed=1, fingerprint="model-a", progress=False)
    generate_shard(one_step, PROMPTS, out, start=3, end=7, seed=1, fingerprint="model-a", progress=False)
    same = generate_shard(one_step, PROMPTS, out, start=0, end=3, seed=1, fingerprint="model-a", progress=False)
    assert same["written"] == 0
    stamp = os.stat(image_path(out, 5)).st_mtime_ns
    changed = generate_shard(one_step, PROMPTS, out, start=0, end=3, seed=1, fingerprint="model-b", progress=False)
    assert changed["written"] == 3 and os.stat(image_path(out, 5)).st_mtime_ns == stamp
