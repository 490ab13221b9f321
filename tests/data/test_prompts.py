"""Prompt files: format round trips, exact error lines, atomic writes, resumable batch order."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from dkd.data import (
    PromptFileError,
    PromptSet,
    epoch_permutation,
    read_prompts,
    step_batch,
    write_prompts,
)
from dkd.io import atomic_open, atomic_write_text

PROMPTS = ["a photo of a cat", "café 東京 🚀", 'quotes " and \\ backslash', "tab\tinside"]


def _write_bytes(path, data: bytes):
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _raises(path, *, line: int | None = None, text: str = ""):
    """pytest.raises for a PromptFileError naming ``path`` (and ``line N`` when given)."""
    pattern = re.escape(str(path)) + (rf".*\bline {line}\b" if line else "") + ".*" + re.escape(text)
    return pytest.raises(PromptFileError, match=pattern)


@pytest.mark.parametrize("name", ["p.txt", "p.jsonl", "p.txt.gz", "p.jsonl.gz", "P.TXT"])
def test_round_trip(tmp_path, name):
    path = write_prompts(tmp_path / name, iter(PROMPTS))
    got = read_prompts(path)
    assert isinstance(got, PromptSet)
    assert got.prompts == tuple(PROMPTS) and got.skipped_empty == 0 and got.source == str(path)
    assert len(got) == 4 and got[1] == "café 東京 🚀" and got[-1] == "tab\tinside"


@pytest.mark.parametrize("gz", [False, True])
def test_written_bytes_match_the_formats(tmp_path, gz):
    suffix = ".gz" if gz else ""
    txt = write_prompts(tmp_path / f"a.txt{suffix}", PROMPTS).read_bytes()
    jsonl = write_prompts(tmp_path / f"a.jsonl{suffix}", PROMPTS).read_bytes()
    if gz:
        txt, jsonl = gzip.decompress(txt), gzip.decompress(jsonl)
    assert txt == "".join(p + "\n" for p in PROMPTS).encode("utf-8")
    assert [json.loads(line) for line in jsonl.decode("utf-8").splitlines()] == [{"prompt": p} for p in PROMPTS]
    assert "café 東京 🚀".encode() in jsonl  # ensure_ascii=False


def test_gzip_output_is_deterministic(tmp_path):
    first = write_prompts(tmp_path / "a.txt.gz", PROMPTS).read_bytes()
    assert write_prompts(tmp_path / "b.txt.gz", PROMPTS).read_bytes() == first


@pytest.mark.parametrize("name", ["p.txt", "p.txt.gz"])
def test_txt_strips_and_counts_empty_lines(tmp_path, name):
    data = b"\n  first  \r\n\n \t \nsecond\n\n\xef\xbb\xbfthird-keeps-inner-bom\n\n"
    got = read_prompts(_write_bytes(tmp_path / name, data))
    assert got.prompts == ("first", "second", "\ufeffthird-keeps-inner-bom")
    assert got.skipped_empty == 5


def test_txt_without_final_newline_and_with_leading_bom(tmp_path):
    got = read_prompts(_write_bytes(tmp_path / "p.txt", b"\xef\xbb\xbfone\ntwo"))
    assert got.prompts == ("one", "two") and got.skipped_empty == 0


@pytest.mark.parametrize("name", ["p.jsonl", "p.jsonl.gz"])
def test_jsonl_strips_and_counts_empty_prompts(tmp_path, name):
    lines = ['{"prompt": " a ", "id": 1}', "", '{"prompt": ""}', "   ", '{"prompt": "  \\n "}', '{"prompt": "b"}']
    got = read_prompts(_write_bytes(tmp_path / name, "\n".join(lines).encode()))
    assert got.prompts == ("a", "b") and got.skipped_empty == 4


@pytest.mark.parametrize("name", ["p.txt", "p.jsonl", "p.txt.gz"])
def test_invalid_utf8_names_first_bad_line(tmp_path, name):
    rows = [b"ok one", b"ok two", b"bad \xff\xfe here", b"\xff again"]
    if name.startswith("p.jsonl"):
        rows = [b'{"prompt": "' + row + b'"}' for row in rows]
    path = _write_bytes(tmp_path / name, b"\n".join(rows) + b"\n")
    with _raises(path, line=3, text="invalid UTF-8"):
        read_prompts(path)


@pytest.mark.parametrize(
    ("line2", "text"),
    [
        ('{"prompt": "broken', "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('"just a string"', "expected a JSON object"),
        ('{"caption": "no prompt key"}', '"prompt" key'),
        ('{"prompt": 3}', "must be a string"),
        ('{"prompt": null}', "must be a string"),
    ],
)
def test_bad_jsonl_line(tmp_path, line2, text):
    path = _write_bytes(tmp_path / "p.jsonl", f'\n{line2}\n{{"prompt": "fine"}}\n'.encode())
    with _raises(path, line=2, text=text):
        read_prompts(path)


@pytest.mark.parametrize("data", [b"", b"\n \n\t\r\n\n"])
@pytest.mark.parametrize("name", ["p.txt", "p.jsonl.gz"])
def test_empty_file(tmp_path, name, data):
    path = _write_bytes(tmp_path / name, data)
    with _raises(path, text="empty prompt file"):
        read_prompts(path)


def test_jsonl_with_only_empty_prompts_is_empty(tmp_path):
    path = _write_bytes(tmp_path / "p.jsonl", b'{"prompt": " "}\n{"prompt": ""}\n')
    with _raises(path, text="empty prompt file"):
        read_prompts(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with _raises(tmp_path / "nope.txt", text="not found"):
        read_prompts(tmp_path / "nope.txt")
    with _raises(tmp_path / "p.csv", text=".txt, .jsonl, .txt.gz, .jsonl.gz"):
        read_prompts(_write_bytes(tmp_path / "p.csv", b"a\n"))
    with _raises(tmp_path / "p.json", text="unknown prompt file suffix"):
        write_prompts(tmp_path / "p.json", ["a"])
    assert not (tmp_path / "p.json").exists()


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "p.txt.gz"
    path.write_bytes(b"plain text, not gzip\n")
    with _raises(path, text="gzip"):
        read_prompts(path)
    path.write_bytes(gzip.compress(b"one\ntwo\n" * 100)[:-12])  # truncated stream
    with _raises(path, text="gzip"):
        read_prompts(path)


@pytest.mark.parametrize(
    ("name", "bad", "text"),
    [
        ("p.txt", "two\nlines", "line break"),
        ("p.txt.gz", "carriage\rreturn", "line break"),
        ("p.jsonl", "   ", "empty prompt"),
        ("p.txt", 7, "must be a string"),
        ("p.jsonl.gz", "lone \ud800 surrogate", "UTF-8"),
    ],
)
def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, name, bad, text):
    path = tmp_path / name
    _write_bytes(path, b"old prompt\n")
    before = path.read_bytes()
    with _raises(path, line=3, text=text):
        write_prompts(path, ["ok", "fine", bad, "never written"])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("name", ["p.txt", "p.jsonl.gz"])
def test_many_prompts_across_write_chunks(tmp_path, name):
    prompts = [f"prompt {i} ✓" for i in range(10_001)]
    path = write_prompts(tmp_path / name, prompts)
    assert read_prompts(path).prompts == tuple(prompts)
    with _raises(path, line=9000, text="empty prompt"):
        write_prompts(path, prompts[:8999] + [""] + prompts)
    assert read_prompts(path).prompts == tuple(prompts) and len(list(tmp_path.iterdir())) == 1


def test_jsonl_accepts_newline_inside_a_prompt(tmp_path):
    path = write_prompts(tmp_path / "p.jsonl", ["two\nlines", "x"])
    assert path.read_bytes().count(b"\n") == 2
    assert read_prompts(path).prompts == ("two\nlines", "x")


def test_writing_no_prompts_is_refused(tmp_path):
    with _raises(tmp_path / "p.txt", text="empty prompt file"):
        write_prompts(tmp_path / "p.txt", [])
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_and_atomic_write_text(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with atomic_open(target) as handle:
        handle.write("é\n")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_bytes() == "é\n".encode()
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as handle:
        handle.write(b"partial")
        raise RuntimeError("killed")
    assert target.read_bytes() == "é\n".encode() and [p.name for p in target.parent.iterdir()] == ["f.txt"]
    assert atomic_write_text(target, "new") == target and target.read_text() == "new"
    with pytest.raises(ValueError, match="mode"), atomic_open(target, "a"):
        pass


# ---------------------------------------------------------------- batch order


def test_epoch_permutation_is_a_permutation_fixed_by_seed_and_epoch():
    perm = epoch_permutation(1000, seed=7, epoch=3)
    assert sorted(perm) == list(range(1000)) and all(type(i) is int for i in perm)
    assert perm == epoch_permutation(1000, seed=7, epoch=3)
    others = [epoch_permutation(1000, seed=s, epoch=e) for s, e in [(7, 4), (8, 3), (3, 7), (10, 0), (0, 10)]]
    assert all(other != perm for other in others) and others[3] != others[4]
    assert perm != list(range(1000))
    assert epoch_permutation(0, seed=0, epoch=0) == []


def test_epoch_permutation_stream_is_pinned():
    # A change here means resumed runs would see a different order: PCG64 raw draws are stable in numpy.
    assert epoch_permutation(10, seed=0, epoch=0) == [3, 2, 1, 8, 6, 0, 7, 4, 5, 9]
    assert epoch_permutation(10, seed=0, epoch=1) == [7, 4, 5, 1, 9, 8, 6, 2, 0, 3]


@pytest.mark.parametrize("bad", [{"seed": -1}, {"epoch": -2}, {"seed": 1.5}, {"epoch": True}])
def test_epoch_permutation_rejects_bad_seeds(bad):
    with pytest.raises(ValueError):
        epoch_permutation(5, **{"seed": 0, "epoch": 0, **bad})


def test_steps_of_an_epoch_are_consecutive_slices_of_its_permutation():
    """23 prompts in batches of 5: four full batches per epoch, the 3 left over are not used."""
    epoch0 = [step_batch(23, 5, seed=1, step=k) for k in range(4)]
    assert [i for batch in epoch0 for i in batch] == epoch_permutation(23, seed=1, epoch=0)[:20]
    assert [step_batch(23, 5, seed=1, step=k) for k in range(4, 8)] == [
        epoch_permutation(23, seed=1, epoch=1)[5 * k : 5 * k + 5] for k in range(4)
    ]
    assert len({i for batch in epoch0 for i in batch}) == 20  # no prompt twice in an epoch
    exact = [i for k in range(4) for i in step_batch(20, 5, seed=1, step=k)]
    assert sorted(exact) == list(range(20))  # no rest: every prompt once


def test_step_batch_depends_on_the_seed_and_repeats_for_the_same_step():
    assert step_batch(40, 8, seed=3, step=7) == step_batch(40, 8, seed=3, step=7)
    assert step_batch(40, 8, seed=3, step=7) != step_batch(40, 8, seed=4, step=7)
    assert step_batch(40, 8, seed=3, step=2) != step_batch(40, 8, seed=3, step=7)  # same position, next epoch
    fresh = [step_batch(40, 8, seed=3, step=k, stream=1) for k in range(5)]  # another order of the same epochs
    assert fresh != [step_batch(40, 8, seed=3, step=k) for k in range(5)]
    assert sorted(i for batch in fresh for i in batch) == list(range(40))


@pytest.mark.parametrize(
    "bad", [{"batch_size": 0}, {"step": -1}, {"n": 3}, {"seed": -3}, {"step": 1.5}, {"batch_size": True}]
)
def test_step_batch_rejects_bad_arguments(bad):
    kw = {"n": 10, "batch_size": 4, "seed": 0, "step": 0, **bad}
    with pytest.raises(ValueError):
        step_batch(kw.pop("n"), kw.pop("batch_size"), **kw)
