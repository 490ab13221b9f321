"""COCO caption sets and the downloader, against fake archives laid out like the official ones.

No network: the archives are served as ``file://`` URLs (HTTP resume: ``test_download.py``);
expected values come from the fake annotations and ``hashlib``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dkd.data import download
from dkd.data.cli import add_subcommands
from dkd.data.coco import COCO2014, COCO2017, parse_captions, prepare_coco, read_caption_file, select_captions
from dkd.data.download import ChecksumError, DataUnavailableError, RemoteFile

IDS = [391, 42, 9, 139, 73, 285, 632, 724, 776, 785, 802, 872]  # unsorted on purpose


def _jpeg(k: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8 + k, 6 + k % 3), (20 * k % 256, 7 * k % 256, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _fake(root: Path, split=COCO2014) -> dict:
    """Official-layout archives under ``root`` (``annotations/...zip``, ``zips/...zip``)."""
    images, annotations, jpegs, captions = [], [], {}, {}
    ann_id = 1000
    for k, image_id in enumerate(IDS):
        name = split.file_name(image_id)
        images.append({"id": image_id, "file_name": name, "width": 8 + k, "height": 6})
        jpegs[name] = _jpeg(k)
        captions[name] = []
        for j in range(1 + k % 5):
            ann_id -= 7  # annotation ids descend, so file order is not id order
            text = f"  A photo\nof object {image_id},  caption {j} "
            annotations.append({"id": ann_id, "image_id": image_id, "caption": text})
            captions[name].insert(0, " ".join(text.split()))  # id order = reverse of insertion
    data = {"info": {}, "images": images, "annotations": annotations}
    (root / "annotations").mkdir(parents=True)
    (root / "zips").mkdir()
    with zipfile.ZipFile(root / split.annotations_zip, "w") as archive:
        archive.writestr(f"annotations/{split.captions_json}", json.dumps(data))
        archive.writestr("annotations/instances_val.json", "{}")
    with zipfile.ZipFile(root / split.images_zip, "w") as archive:
        for name, content in jpegs.items():
            archive.writestr(f"{split.image_dir}/{name}", content)
    return {"data": data, "jpegs": jpegs, "captions": captions, "base_url": root.as_uri()}


@pytest.fixture
def fake(tmp_path):
    return _fake(tmp_path / "server")


@pytest.fixture(autouse=True)
def online(monkeypatch):
    for name in download.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_parse_captions_hand_example():
    data = {
        "images": [{"id": 5, "file_name": "b.jpg"}, {"id": 2, "file_name": "a.jpg"}, {"id": 7, "file_name": "c.jpg"}],
        "annotations": [
            {"id": 9, "image_id": 5, "caption": "second\n of b"},
            {"id": 3, "image_id": 5, "caption": " first of b "},
            {"id": 4, "image_id": 2, "caption": "only a"},
            {"id": 5, "image_id": 7, "caption": "   "},  # c has no usable caption: dropped
        ],
    }
    images = parse_captions(data)
    assert [(i.image_id, i.file_name, i.captions) for i in images] == [
        (2, "a.jpg", ("only a",)),
        (5, "b.jpg", ("first of b", "second of b")),
    ]
    with pytest.raises(ValueError, match=r"annotations\[0\]"):
        parse_captions({"images": [], "annotations": [{"image_id": 1, "caption": "x"}]}, source="f.json")


def test_selection_is_seeded_and_follows_the_documented_draws(fake):
    images = parse_captions(fake["data"])
    first = select_captions(images, count=7, seed=3)
    assert first == select_captions(images, count=7, seed=3)
    assert [i.file_name for i, _ in first] != [i.file_name for i, _ in select_captions(images, count=7, seed=4)]
    assert len(first) == 7 and len({i.image_id for i, _ in first}) == 7
    for image, caption in first:
        assert caption in fake["captions"][image.file_name]
    # The module doc's recipe, computed here directly.
    keys = np.random.PCG64(np.random.SeedSequence([3, 0])).random_raw(len(IDS))
    picks = np.random.PCG64(np.random.SeedSequence([3, 1])).random_raw(len(IDS))
    by_id = sorted(IDS)
    expected = [by_id[j] for j in np.argsort(keys, kind="stable")[:7]]
    assert [i.image_id for i, _ in first] == expected
    for image, caption in first:
        j = by_id.index(image.image_id)
        assert caption == image.captions[int(picks[j]) % len(image.captions)]
    # A smaller count is a prefix, and an image keeps its caption.
    assert select_captions(images, count=4, seed=3) == first[:4]
    with pytest.raises(ValueError, match="between 1 and the 12"):
        select_captions(images, count=13, seed=3)


def test_prepare_from_official_archives_then_rerun_without_download(fake, tmp_path, monkeypatch):
    out = tmp_path / "out"
    paths = prepare_coco("coco2014", out=out, seed=3, count=7, base_url=fake["base_url"], progress=False)
    dest = out / "coco2014-7"
    assert paths["prompts"] == dest / "prompts.txt" and paths["reference"] == dest / "reference"
    prompts, files = _lines(dest / "prompts.txt"), _lines(dest / "images.txt")
    assert len(prompts) == len(files) == 7 and len(set(files)) == 7
    for caption, name in zip(prompts, files):
        assert caption in fake["captions"][name]  # caption i belongs to image i
    links = sorted((dest / "reference").iterdir())
    assert [p.name for p in links] == sorted(files)
    for link in links:
        assert link.is_symlink() and link.read_bytes() == fake["jpegs"][link.name]
    assert json.loads((dest / "info.json").read_text())["seed"] == 3
    manifest = json.loads((out / "downloads" / "checksums.json").read_text())
    server = Path(fake["base_url"].removeprefix("file://"))
    for name, rel in (("val2014.zip", COCO2014.images_zip), ("annotations_trainval2014.zip", COCO2014.annotations_zip)):
        assert manifest[name]["sha256"] == hashlib.sha256((server / rel).read_bytes()).hexdigest()

    # Second run: verified from the manifest, nothing requested, same outputs.
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "downloads").glob("*.zip")}
    calls = []
    real_open = download._open_stream
    monkeypatch.setattr(download, "_open_stream", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    before = {p.name: p.read_bytes() for p in dest.glob("*.txt")}
    prepare_coco("coco2014", out=out, seed=3, count=7, base_url=fake["base_url"], progress=False)
    assert calls == []
    assert {p.name: p.stat().st_mtime_ns for p in (out / "downloads").glob("*.zip")} == mtimes
    assert {p.name: p.read_bytes() for p in dest.glob("*.txt")} == before

    # Another seed: another selection, and the reference folder follows it exactly.
    prepare_coco("coco2014", out=out, seed=4, count=7, base_url=fake["base_url"], progress=False)
    files4 = _lines(dest / "images.txt")
    assert files4 != files and sorted(p.name for p in (dest / "reference").iterdir()) == sorted(files4)


def test_caption_file_is_used_as_is(fake, tmp_path):
    captions = ["a dog  on a\nsofa", "two cats", "a red bus"]
    pkl = tmp_path / "captions_coco14_test.pkl"
    pkl.write_bytes(pickle.dumps(captions))
    out = tmp_path / "out"
    paths = prepare_coco("coco2014", out=out, captions_file=pkl, base_url=fake["base_url"], progress=False)
    assert _lines(paths["prompts"]) == ["a dog on a sofa", "two cats", "a red bus"]
    assert "images" not in paths and not (out / "coco2014-3" / "images.txt").exists()
    # no image names: the reference is every val image
    assert sorted(p.name for p in paths["reference"].iterdir()) == sorted(fake["jpegs"])
    with pytest.raises(ValueError, match="holds 3 captions, fewer than --count 30000"):
        prepare_coco("coco2014", out=out, captions_file=pkl, count=30000, reference="none", progress=False)
    first = prepare_coco("coco2014", out=out, captions_file=pkl, count=2, reference="none", progress=False)
    assert _lines(first["prompts"]) == ["a dog on a sofa", "two cats"]  # the first `count`, as DMD2 takes them

    csv_file = tmp_path / "uid_caption.csv"
    csv_file.write_text("uid,caption\n42_mscoco_0,A bus.\n9_mscoco_3,A cat.\n", encoding="utf-8")
    assert read_caption_file(csv_file) == (["A bus.", "A cat."], [COCO2014.file_name(42), COCO2014.file_name(9)])


def test_a_caption_file_on_the_hub_is_fetched_or_placed_by_hand(tmp_path, monkeypatch):
    """`hf://tianweiy/DMD2/data/coco/captions_coco14_test.pkl` (a model repo): offline and not placed,
    one error naming its URL and where to put it; placed there, it is used as a local caption file."""
    from dkd.data.download import DataUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("dkd.data.hub.is_offline", lambda: True)
    spec, out = "hf://tianweiy/DMD2/data/coco/captions_coco14_test.pkl", tmp_path / "out"
    with pytest.raises(
        DataUnavailableError,
        match=r"captions_coco14_test.pkl  \(from https://huggingface.co/"
        r"tianweiy/DMD2/resolve/main/data/coco/captions_coco14_test.pkl\)",
    ):
        prepare_coco("coco2014", out=out, captions_file=spec, reference="none", progress=False)
    (out / "downloads" / "captions").mkdir(parents=True)
    (out / "downloads" / "captions" / "captions_coco14_test.pkl").write_bytes(pickle.dumps(["a b", "c d", "e f"]))
    paths = prepare_coco("coco2014", out=out, captions_file=spec, count=2, reference="none", progress=False)
    assert _lines(paths["prompts"]) == ["a b", "c d"]
    assert json.loads(paths["info"].read_text())["captions"] == spec
    with pytest.raises(ValueError, match="hf://<owner>/<repo>/<path in the repo>"):
        prepare_coco("coco2014", out=out, captions_file="hf://tianweiy/DMD2", reference="none", progress=False)


def test_caption_file_errors(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([OrderedDict()]))  # needs a global: refused, never imported
    with pytest.raises(ValueError, match="refusing to load collections.OrderedDict"):
        read_caption_file(evil)
    holes = tmp_path / "holes.pkl"
    holes.write_bytes(pickle.dumps(["fine", None]))
    with pytest.raises(ValueError, match=r"holes.pkl: entry 1 is None"):
        read_caption_file(holes)


def test_local_extracted_folder_works_offline(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = tmp_path / "local"
    (local / "annotations").mkdir(parents=True)
    (local / "annotations" / "captions_val2014.json").write_text(json.dumps(fake["data"]))
    (local / "val2014").mkdir()
    for name, content in fake["jpegs"].items():
        (local / "val2014" / name).write_bytes(content)
    out = tmp_path / "out"
    paths = prepare_coco("coco2014", out=out, local=local, seed=3, count=7, progress=False)
    for link in paths["reference"].iterdir():
        assert link.resolve().parent == (local / "val2014").resolve()
    assert not (out / "downloads").exists()
    for caption, name in zip(_lines(paths["prompts"]), _lines(paths["images"])):
        assert caption in fake["captions"][name]


def test_a_missing_image_changes_no_output(fake, tmp_path):
    local = tmp_path / "local"
    (local / "val2014").mkdir(parents=True)
    server = Path(fake["base_url"].removeprefix("file://"))
    shutil.copy(server / COCO2014.annotations_zip, local)
    for name, content in fake["jpegs"].items():
        (local / "val2014" / name).write_bytes(content)
    out = tmp_path / "out"
    first = prepare_coco("coco2014", out=out, local=local, seed=1, count=12, progress=False)
    before = {p.name: p.read_bytes() for p in first["prompts"].parent.glob("*.*")}
    (local / "val2014" / COCO2014.file_name(42)).unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) of the selection are missing.*COCO_val2014_000000000042"):
        prepare_coco("coco2014", out=out, local=local, seed=2, count=12, progress=False)
    assert {p.name: p.read_bytes() for p in first["prompts"].parent.glob("*.*")} == before
    with pytest.raises(ValueError, match="names no images"):
        prepare_coco("coco2014", out=out, captions_file=first["prompts"], reference="selected", progress=False)


def test_local_and_archive_give_the_same_selection(fake, tmp_path):
    server = Path(fake["base_url"].removeprefix("file://"))
    local = tmp_path / "local"
    local.mkdir()
    for rel in (COCO2014.annotations_zip, COCO2014.images_zip):
        shutil.copy(server / rel, local / Path(rel).name)
    a = prepare_coco("coco2014", out=tmp_path / "a", local=local, seed=5, count=6, progress=False)
    b = prepare_coco("coco2014", out=tmp_path / "b", seed=5, count=6, base_url=fake["base_url"], progress=False)
    assert a["prompts"].read_bytes() == b["prompts"].read_bytes()
    assert a["images"].read_bytes() == b["images"].read_bytes()


def test_offline_names_every_missing_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    with pytest.raises(DataUnavailableError) as caught:
        prepare_coco("coco2014", out=out, progress=False)
    message = str(caught.value)
    for text in (
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
        "http://images.cocodataset.org/zips/val2014.zip",
        "annotations_trainval2014.zip",
        "val2014.zip",
        str(out / "downloads"),
        "--local DIR",
        "HF_HUB_OFFLINE",
    ):
        assert text in message
    assert not (out / "coco2014-30k").exists()


def test_network_failure_is_the_same_one_message(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataUnavailableError, match=r"(?s)val2014\.zip.*into the directory .*downloads.*--local"):
        prepare_coco("coco2014", out=out, base_url="http://127.0.0.1:9", progress=False, timeout=5)


def test_coco2017_naming(tmp_path):
    fake17 = _fake(tmp_path / "server", COCO2017)
    paths = prepare_coco("coco2017", out=tmp_path / "out", count=12, base_url=fake17["base_url"], progress=False)
    assert paths["prompts"].parent.name == "coco2017-12"
    assert sorted(_lines(paths["images"])) == sorted(f"{i:012d}.jpg" for i in IDS)


def test_resume_of_a_truncated_part_file(fake, tmp_path, monkeypatch):
    server = Path(fake["base_url"].removeprefix("file://"))
    content = (server / COCO2014.images_zip).read_bytes()
    directory = tmp_path / "dl"
    directory.mkdir()
    (directory / "val2014.zip.part").write_bytes(content[:1000])
    offsets = []
    real_open = download._open_stream
    monkeypatch.setattr(
        download, "_open_stream", lambda url, offset, **k: offsets.append(offset) or real_open(url, offset, **k)
    )
    remote = RemoteFile(f"{fake['base_url']}/{COCO2014.images_zip}", sha256=hashlib.sha256(content).hexdigest())
    path = download.download_file(remote, directory=directory, progress=False)
    assert offsets == [1000] and path.read_bytes() == content and not (directory / "val2014.zip.part").exists()


def test_wrong_checksum_marks_nothing_complete(fake, tmp_path):
    remote = RemoteFile(f"{fake['base_url']}/{COCO2014.annotations_zip}", sha256="0" * 64)
    with pytest.raises(ChecksumError, match="sha256 is .* expected 0000"):
        download.download_file(remote, directory=tmp_path, progress=False)
    assert not (tmp_path / remote.name).exists() and not (tmp_path / f"{remote.name}.part").exists()
    assert (tmp_path / f"{remote.name}.corrupt").exists()
    assert remote.name not in download.read_manifest(tmp_path)


def test_a_changed_file_fails_verification(fake, tmp_path):
    remote = RemoteFile(f"{fake['base_url']}/{COCO2014.annotations_zip}")
    path = download.download_file(remote, directory=tmp_path, progress=False)
    content = path.read_bytes()
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))  # same size, one bit pattern changed
    with pytest.raises(ChecksumError, match="the manifest recorded"):
        download.download_file(remote, directory=tmp_path, progress=False)


def test_cli_runs_the_function_and_reports_errors(fake, tmp_path, capsys, monkeypatch):
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            "data",
            "coco2014",
            "--out",
            str(out),
            "--count",
            "5",
            "--seed",
            "2",
            "--base-url",
            fake["base_url"],
            "--quiet",
        ]
    )
    assert args.run(args) == 0
    assert f"prompts\t{out / 'coco2014-5' / 'prompts.txt'}" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = parser.parse_args(["data", "coco2017", "--out", str(out), "--quiet"])
    assert args.run(args) == 2
    assert capsys.readouterr().err.startswith("error: 2 required file(s) missing")


def test_a_set_made_with_another_reference_mode_is_refused(fake, tmp_path):
    """The CLI's default reference is the selected images; the paper config asks for all val images:
    a folder prepared by hand with the default is refused before any FID is computed against it."""
    from dkd.data import check_reference_mode

    paths = prepare_coco("coco2014", out=tmp_path, base_url=fake["base_url"], count=3, progress=False)
    folder = paths["info"].parent
    check_reference_mode(folder, "selected")
    with pytest.raises(
        ValueError,
        match=r"made with reference='selected', the config asks for 'all'.*"
        r"python -m dkd data coco2014 --reference all",
    ):
        check_reference_mode(folder, "all")
    with pytest.raises(FileNotFoundError, match="info.json: missing"):
        check_reference_mode(tmp_path / "elsewhere", "all")
