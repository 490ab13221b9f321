"""HPSv2 benchmark prompts and JourneyDB prompts, with ``hf_hub_download`` replaced by a fake
that serves files written here; the JourneyDB archive is a small ``.jsonl.tgz`` built here."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

from dkd.data import download
from dkd.data.cli import add_subcommands
from dkd.data.download import DataUnavailableError
from dkd.data.hub import (
    HPSV2_STYLES,
    JOURNEYDB_FILE,
    journeydb_prompts,
    prepare_hpsv2,
    prepare_journeydb,
    sample_prompts,
)


@pytest.fixture(autouse=True)
def online(monkeypatch):
    for name in download.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


class FakeHub:
    """Stands in for ``huggingface_hub.hf_hub_download``: serves ``files[(repo, filename)]``,
    only from its "cache" when ``local_files_only`` and ``cached`` is False raises as the real one."""

    def __init__(self, files: dict, *, cached: bool = True, error: Exception | None = None):
        self.files, self.cached, self.error, self.calls = files, cached, error, []

    def __call__(self, repo_id, filename, **kwargs):
        self.calls.append((repo_id, filename, kwargs))
        if self.error is not None:
            raise self.error
        if kwargs.get("local_files_only") and not self.cached:
            raise LocalEntryNotFoundError(f"{filename} is not in the cache and outgoing traffic is disabled")
        return str(self.files[(repo_id, filename)])


def _hps_files(root: Path) -> tuple[dict, dict]:
    prompts = {style: [f"{style} prompt {i}" for i in range(5)] for style in HPSV2_STYLES}
    prompts["photo"][2] = "  a photo of\n a  dog "
    files = {}
    for style, items in prompts.items():
        path = root / f"{style}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(items), encoding="utf-8")
        files[("zhwang/HPDv2", f"benchmark/{style}.json")] = path
    return prompts, files


def test_hpsv2_from_the_hub(tmp_path, monkeypatch):
    prompts, files = _hps_files(tmp_path / "cache")
    hub = FakeHub(files)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub)
    written = prepare_hpsv2(out=tmp_path / "out", progress=False)
    assert set(written) == set(HPSV2_STYLES)
    for style in HPSV2_STYLES:
        expected = [" ".join(p.split()) for p in prompts[style]]
        assert written[style] == tmp_path / "out" / "hpsv2" / f"{style}.txt"
        assert written[style].read_text(encoding="utf-8").splitlines() == expected
    assert written["photo"].read_text().splitlines()[2] == "a photo of a dog"
    assert [(r, f) for r, f, _ in hub.calls] == [("zhwang/HPDv2", f"benchmark/{s}.json") for s in HPSV2_STYLES]
    assert all(k["repo_type"] == "dataset" and k["local_files_only"] is False for _, _, k in hub.calls)


def test_hpsv2_local_directory_needs_no_hub(tmp_path, monkeypatch):
    prompts, _ = _hps_files(tmp_path / "local" / "benchmark")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", FakeHub({}, error=AssertionError("hub called")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    written = prepare_hpsv2(out=tmp_path / "out", local=tmp_path / "local", styles=["anime"], progress=False)
    assert list(written) == ["anime"] and written["anime"].read_text().splitlines() == prompts["anime"]


def test_hpsv2_offline_names_each_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = FakeHub({}, cached=False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub)
    with pytest.raises(DataUnavailableError) as caught:
        prepare_hpsv2(out=tmp_path / "out", progress=False)
    message = str(caught.value)
    assert all(k["local_files_only"] is True for _, _, k in hub.calls) and len(hub.calls) == 4
    assert "https://huggingface.co/datasets/zhwang/HPDv2/resolve/main/benchmark/anime.json" in message
    for style in HPSV2_STYLES:
        assert f"{style}.json" in message
    assert str(tmp_path / "out" / "downloads" / "hpsv2") in message and "--local DIR" in message
    assert not (tmp_path / "out" / "hpsv2").exists()


def test_hpsv2_empty_prompt_is_an_error(tmp_path, monkeypatch):
    local = tmp_path / "local"
    local.mkdir()
    (local / "anime.json").write_text(json.dumps(["fine", "  "]))
    with pytest.raises(ValueError, match=r"anime.json: entry 1 is '  '"):
        prepare_hpsv2(out=tmp_path / "out", local=local, styles=["anime"], progress=False)


RECORDS = [
    {"img_path": "a.jpg", "prompt": "a castle on a hill --ar 16:9", "Task2": {"Caption": "x"}},
    {"img_path": "b.jpg", "prompt": "  a castle on   a hill --ar 16:9\n"},  # duplicate after normalisation
    {"img_path": "c.jpg", "prompt": ""},  # empty
    None,  # blank line
    {"img_path": "d.jpg", "prompt": None},  # empty
    {"img_path": "e.jpg", "prompt": "a red fox"},
    {"img_path": "f.jpg", "prompt": "a red fox"},  # duplicate
    {"img_path": "g.jpg", "prompt": "A red fox"},  # case differs: kept
]
KEPT = ["a castle on a hill --ar 16:9", "a red fox", "A red fox"]


def _tgz(path: Path, records) -> Path:
    lines = "".join("\n" if r is None else json.dumps(r) + "\n" for r in records).encode()
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("train_anno_realease_repath.jsonl")
        info.size = len(lines)
        archive.addfile(info, io.BytesIO(lines))
    return path


def test_journeydb_counts_empty_and_duplicates(tmp_path, monkeypatch):
    archive = _tgz(tmp_path / "cache.tgz", RECORDS)
    hub = FakeHub({("JourneyDB/JourneyDB", JOURNEYDB_FILE): archive})
    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub)
    written = prepare_journeydb(out=tmp_path / "out", count=None, progress=False)
    assert written["prompts"].read_text(encoding="utf-8").splitlines() == KEPT
    info = json.loads(written["info"].read_text())
    assert (info["lines"], info["empty"], info["duplicates"], info["kept"], info["count"]) == (8, 3, 2, 3, 3)
    assert hub.calls[0][:2] == ("JourneyDB/JourneyDB", JOURNEYDB_FILE) and hub.calls[0][2]["repo_type"] == "dataset"

    kept_all = prepare_journeydb(out=tmp_path / "dup", count=None, dedupe=False, progress=False)
    assert len(kept_all["prompts"].read_text().splitlines()) == 5


def test_journeydb_sampling_is_seeded(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    _tgz(local / "train_anno_realease_repath.jsonl.tgz", [{"prompt": f"prompt {i}"} for i in range(40)])
    a = prepare_journeydb(out=tmp_path / "a", local=local, count=10, seed=1, progress=False)
    b = prepare_journeydb(out=tmp_path / "b", local=local, count=10, seed=1, progress=False)
    c = prepare_journeydb(out=tmp_path / "c", local=local, count=10, seed=2, progress=False)
    pa = a["prompts"].read_text().splitlines()
    assert pa == b["prompts"].read_text().splitlines() != c["prompts"].read_text().splitlines()
    keys = np.random.PCG64(np.random.SeedSequence([1, 0])).random_raw(40)
    assert pa == [f"prompt {i}" for i in np.argsort(keys, kind="stable")[:10]]
    assert sample_prompts([f"prompt {i}" for i in range(40)], count=4, seed=1) == pa[:4]
    with pytest.raises(ValueError, match="40 prompts kept .* fewer than --count 41"):
        prepare_journeydb(out=tmp_path / "d", local=local, count=41, progress=False)


def test_journeydb_bad_line_names_file_and_line(tmp_path):
    lines = [(1, b'{"prompt": "ok"}\n'), (2, b"{not json}\n")]
    with pytest.raises(ValueError, match=r"src.jsonl, line 2: invalid JSON"):
        journeydb_prompts(lines, source="src.jsonl")
    with pytest.raises(ValueError, match=r'line 1: expected a JSON object with a "prompt"'):
        journeydb_prompts([(1, b'{"text": "x"}')], source="src.jsonl")


def test_journeydb_gated_message(tmp_path, monkeypatch):
    gated = GatedRepoError.__new__(GatedRepoError)
    Exception.__init__(gated, "401 Client Error: access to JourneyDB/JourneyDB is restricted")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", FakeHub({}, error=gated))
    with pytest.raises(DataUnavailableError) as caught:
        prepare_journeydb(out=tmp_path / "out", progress=False)
    message = str(caught.value)
    for text in (
        "GatedRepoError",
        "HF_TOKEN",
        "train_anno_realease_repath.jsonl.tgz",
        str(tmp_path / "out" / "downloads" / "journeydb"),
        "--local DIR",
        f"https://huggingface.co/datasets/JourneyDB/JourneyDB/resolve/main/{JOURNEYDB_FILE}",
    ):
        assert text in message


def test_cli_journeydb(tmp_path, capsys):
    local = tmp_path / "local"
    local.mkdir()
    _tgz(local / "train_anno_realease_repath.jsonl.tgz", RECORDS)
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["data", "journeydb", "--out", str(tmp_path / "out"), "--local", str(local), "--count", "0", "--quiet"]
    )
    assert args.run(args) == 0
    captured = capsys.readouterr()
    assert f"prompts\t{tmp_path / 'out' / 'journeydb' / 'prompts.txt'}" in captured.out
    assert "8 lines, 3 empty, 2 duplicate(s) skipped, 3 kept, 3 written" in captured.err
    args = parser.parse_args(["data", "journeydb", "--out", str(tmp_path / "out"), "--local", str(local), "--quiet"])
    assert args.run(args) == 2 and "fewer than --count 1400000" in capsys.readouterr().err
