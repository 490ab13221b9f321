"""The prompt-embedding disk cache: equal to direct encoding, read back without the text
encoder, damaged shards rewritten, other encoders kept apart, the loop's results unchanged."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dkd.adapters import AdapterSpec
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.train.config import DistillConfig
from dkd.train.embeddings import ENCODER_INFO, EmbeddingCache, encoder_key, texts_hash
from dkd.train.loop import distill

PROMPTS = [f"prompt {i}: {'a red cube ' * (i % 4)}on a table" for i in range(10)]  # blocks of 4: 4 + 4 + 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two OpenMP threads on a shared 2-core machine can
    be 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        name: str(save_tiny_backbone(family, root / name, seed=seed))
        for name, family, seed in (("sd", "sd", 1), ("sd-other", "sd", 2), ("pixart", "pixart", 1))
    }


class Calls:
    """Counts the text encoder's forward calls and the prompts they encode."""

    def __init__(self, teacher):
        self.calls, self.prompts = 0, 0
        teacher.text_encoder.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        self.prompts += args[0].shape[0]


def _teacher(folders, name, **kwargs):
    return load_teacher("tiny-pixart" if name == "pixart" else "tiny-sd", folders[name], **kwargs)


def _assert_equal(got, expected):
    assert got.hidden_states.dtype == expected.hidden_states.dtype
    assert torch.equal(got.hidden_states, expected.hidden_states)
    if expected.attention_mask is None:
        assert got.attention_mask is None
    else:
        assert torch.equal(got.attention_mask, expected.attention_mask)


@pytest.mark.parametrize("name", ["sd", "pixart"])
def test_cached_equals_direct_and_is_read_back_without_the_encoder(folders, tmp_path, name):
    teacher = _teacher(folders, name)
    batch = [PROMPTS[i] for i in (9, 0, 5, 3, 5)]  # three blocks, the last one short, a repeat
    direct = teacher.encode(batch)
    first = EmbeddingCache(tmp_path, teacher, PROMPTS, block_size=4, encode_batch=3)
    calls = Calls(teacher)
    _assert_equal(first.encode(batch), direct)
    assert (first.blocks_written, first.blocks_read) == (3, 0)
    assert calls.prompts == 10 and calls.calls == 2 + 2 + 1  # every prompt of the 3 blocks, 3 per call
    shards = sorted(p.name for p in first.folder.glob("*.safetensors"))
    assert shards == [f"{b:07d}-{texts_hash(PROMPTS[4 * b : 4 * b + 4])}.safetensors" for b in range(3)]

    requests = (batch, PROMPTS[::-1], PROMPTS[2:3])
    expected = [teacher.encode(r) for r in requests]  # direct, in other batch compositions
    again = EmbeddingCache(tmp_path, teacher, PROMPTS, block_size=4)  # as a later run or another process
    calls.calls = 0
    for request, reference in zip(requests, expected):
        _assert_equal(again.encode(request), reference)
    assert calls.calls == 0
    assert again.blocks_written == 0 and again.blocks_read == 3 + 3 + 1


def test_prompts_outside_the_list_are_encoded_directly(folders, tmp_path):
    teacher = _teacher(folders, "sd")
    cache = EmbeddingCache(tmp_path, teacher, PROMPTS, block_size=4)
    request = [PROMPTS[0], "not in the list"]
    _assert_equal(cache.encode(request), teacher.encode(request))
    assert cache.blocks_written == 0 and not list(cache.folder.glob("*.safetensors"))


def _content(path: Path) -> tuple:
    """A shard's metadata and tensor bytes (the header's key order may vary between writes)."""
    with safe_open(str(path), framework="pt") as shard:
        return shard.metadata(), {k: shard.get_tensor(k).numpy().tobytes() for k in sorted(shard.keys())}


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flipped":  # one bit of the last row's last value: a valid file with a wrong row
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))
    else:  # the shard of the same texts written for another encoder, copied here
        meta_start = data.index(b'"encoder":"') + len(b'"encoder":"')
        data[meta_start : meta_start + 16] = b"0" * 16
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "flipped", "other-encoder"])
def test_a_damaged_shard_is_detected_and_rewritten(folders, tmp_path, how):
    teacher = _teacher(folders, "sd")
    cache = EmbeddingCache(tmp_path, teacher, PROMPTS, block_size=4)
    cache.encode(PROMPTS[4:8])
    path = cache.shard_path(1)
    good = _content(path)
    _damage(path, how)
    calls = Calls(teacher)
    with pytest.warns(RuntimeWarning, match=f"{path.name}.*(unreadable|digest|another format).*again"):
        _assert_equal(cache.encode([PROMPTS[7]]), teacher.encode([PROMPTS[7]]))
    assert calls.prompts == 4 + 1  # the block encoded again (and the reference)
    assert _content(path) == good  # rewritten: the tensors and metadata of the first time
    calls.prompts = 0
    _assert_equal(
        EmbeddingCache(tmp_path, teacher, PROMPTS, block_size=4).encode([PROMPTS[7]]), teacher.encode([PROMPTS[7]])
    )
    assert calls.prompts == 1


def test_a_cache_of_another_encoder_is_not_used(folders, tmp_path):
    sd, other = _teacher(folders, "sd"), _teacher(folders, "sd-other")
    assert not torch.equal(sd.encode(PROMPTS[:1]).hidden_states, other.encode(PROMPTS[:1]).hidden_states)
    first = EmbeddingCache(tmp_path, sd, PROMPTS, block_size=4)
    first.encode(PROMPTS)
    second = EmbeddingCache(tmp_path, other, PROMPTS, block_size=4)
    assert second.folder != first.folder and second.key == encoder_key(
        json.loads((second.folder / ENCODER_INFO).read_text())
    )
    calls = Calls(other)
    _assert_equal(second.encode(PROMPTS[:3]), other.encode(PROMPTS[:3]))
    assert second.blocks_written == 1 and calls.prompts == 4 + 3
    # the same weights in another precision encode differently: another folder too
    half = EmbeddingCache(tmp_path, _teacher(folders, "sd", dtype=torch.bfloat16), PROMPTS, block_size=4)
    assert half.folder not in (first.folder, second.folder)
    # another prompt list (one prompt edited) shares the unchanged blocks only
    edited = PROMPTS[:5] + ["an edited prompt"] + PROMPTS[6:]
    cache = EmbeddingCache(tmp_path, sd, edited, block_size=4)
    assert cache.folder == first.folder
    assert [cache.shard_path(b) == first.shard_path(b) for b in range(3)] == [True, False, True]
    _assert_equal(cache.encode(edited[4:6]), sd.encode(edited[4:6]))
    assert cache.blocks_written == 1


def test_processes_filling_one_folder_at_once(folders, tmp_path):
    """Two caches (as two DDP ranks) fill the same blocks concurrently: every shard ends complete
    and equal to direct encoding (atomic renames: the last identical write wins)."""
    teachers = [_teacher(folders, "sd"), _teacher(folders, "sd")]
    caches = [EmbeddingCache(tmp_path, t, PROMPTS, block_size=2) for t in teachers]
    errors = []

    def work(cache):
        try:
            cache.fill(progress=False)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(c,)) for c in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(c.blocks_written for c in caches) >= 5
    assert not [p for p in caches[0].folder.iterdir() if p.name.endswith(".tmp")]
    reader = EmbeddingCache(tmp_path, teachers[0], PROMPTS, block_size=2)
    _assert_equal(reader.encode(PROMPTS), teachers[0].encode(PROMPTS))
    assert reader.blocks_written == 0
    assert reader.fill(rank=1, world=2, progress=False) == 0
    with pytest.raises(ValueError, match="rank"):
        reader.fill(rank=2, world=2)


def _config(**overrides):
    values = dict(
        backbone="tiny-sd",
        student=AdapterSpec("tiny-sd", "student", "lorad", rank=4),
        fake=AdapterSpec("tiny-sd", "fake", "lorad", rank=2),
        batch_size=4,
        per_device_batch=2,
        max_steps=3,
        checkpoint_every=100,
        log_every=1,
        seed=3,
    )
    values.update(overrides)
    return DistillConfig(**values)


def _trained(result):
    return [p.detach().clone() for m in (result.student, result.fake) for p in m.parameters() if p.requires_grad]


def test_training_with_the_cache_is_bit_identical_and_skips_the_encoder(folders, tmp_path):
    prompts = PROMPTS[:8]
    direct = _trained(distill(_config(), _teacher(folders, "sd"), prompts, tmp_path / "direct", progress=False))
    for attempt in ("fills", "reads"):
        teacher = _teacher(folders, "sd")
        calls = Calls(teacher)
        config = _config(embedding_cache=str(tmp_path / "cache"))
        result = distill(config, teacher, prompts, tmp_path / attempt, progress=False)
        assert all(torch.equal(a, b) for a, b in zip(_trained(result), direct))
        # the empty prompt (CFG's uncond) is always encoded; the 8 prompts once, by the first run
        assert calls.prompts == (1 + 8 if attempt == "fills" else 1)
    first = json.loads((tmp_path / "direct" / "config.json").read_text())
    cached = json.loads((tmp_path / "reads" / "config.json").read_text())
    assert first["fingerprint"] == cached["fingerprint"]  # a run may resume with or without the cache


def test_config_checks_the_cache_setting(tmp_path):
    assert _config(embedding_cache=tmp_path).embedding_cache == str(tmp_path)
    assert DistillConfig.from_dict(_config(embedding_cache="x").to_dict()).embedding_cache == "x"
    for bad in ("", 3):
        with pytest.raises(ValueError, match="embedding_cache"):
            _config(embedding_cache=bad)
