"""COCO caption sets for zero-shot evaluation: COCO2014 val 30k and COCO2017 val 5k.

``docs/reference.md`` section 3; the paper (section 4.1) uses "30k and 5k randomly sampled
images" of COCO2014 val and COCO2017 val.

Sources, searched in this order for each file the command needs:

1. ``local`` (``--local DIR``): the extracted ``annotations/captions_val2014.json`` (or
   ``captions_val2014.json``) and ``val2014/`` folder, or the official archives
   ``annotations_trainval2014.zip`` / ``val2014.zip`` (2017: the same names with 2017);
2. ``<out>/downloads/``: the archives, downloaded there from ``base_url`` (default
   ``http://images.cocodataset.org``) by :mod:`dkd.data.download` (resumable, verified,
   recorded in ``<out>/downloads/checksums.json``; offline, one error says what to put where).

Selection (:func:`select_captions`, a pure function of the annotations, ``count`` and
``seed``): images with at least one caption, sorted by image id, are ordered by ``argsort`` of
raw 64-bit draws of numpy's ``PCG64(SeedSequence([seed, 0]))`` and the first ``count`` are
taken; each image's caption is ``captions[d % len(captions)]`` (captions in annotation-id
order) where ``d`` is the image's draw from ``PCG64(SeedSequence([seed, 1]))``, indexed by its
position in id order. So the same seed gives the same set on any machine, a smaller ``count``
gives a prefix of a larger one, and an image keeps its caption whatever ``count`` is.
Captions are normalised by collapsing every whitespace run (line breaks included) to one space.

A caption list instead (``captions_file``, e.g. DMD2's ``captions_coco14_test.pkl``: a pickled
list of strings, read without executing anything; ``hf://<owner>/<repo>/<path>`` fetches it from
the hub first) is used as is, in its order (its first ``count``), normalised the same way;
``.txt`` / ``.jsonl`` (``.gz``), a JSON list of strings, or a CSV with a ``caption``
column are accepted too. A CSV column ``file_name``, ``image_id`` or GigaGAN's ``uid``
(``<image id>_mscoco_<k>``) gives each caption's image.

Output, ``<out>/<split>-<count>/`` (``coco2014-30k``, ``coco2017-5k``):

``prompts.txt``  caption i on line i;
``images.txt``   the val image file name of caption i (absent when a caption file names none);
``reference/``   the FID reference folder: one symbolic link per image, pointing at the
                 absolute path of the image (extracted into ``<out>/<split>/val2014/`` from the
                 zip, only the images needed, or in the ``--local`` folder). ``reference="selected"``
                 (default when images are known): the images of ``images.txt``;
                 ``"all"``: every val image (40,504 / 5,000); ``"none"``: no folder, no image archive;
``info.json``    seed, count, sources and reference mode of the files above.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_open, atomic_write_text
from ..vocabulary import COCO_COUNTS
from .captions import normalize_caption, read_caption_file
from .download import RemoteFile, ensure_files
from .hub import HUB_SCHEME, hub_file
from .prompts import write_prompts

BASE_URL = "http://images.cocodataset.org"
REFERENCE_MODES = ("selected", "all", "none")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class CocoSplit:
    """Where one COCO validation split lives in the official archives."""

    name: str  # output prefix, "coco2014"
    annotations_zip: str  # path under the base URL
    images_zip: str
    captions_json: str  # member "annotations/<captions_json>" of the annotations zip
    image_dir: str  # folder of the images in the images zip
    file_pattern: str  # image file name from its id
    default_count: int

    def remotes(self, base_url: str) -> tuple[RemoteFile, RemoteFile]:
        """``(annotations archive, images archive)`` under ``base_url``."""
        base = base_url.rstrip("/")
        return RemoteFile(f"{base}/{self.annotations_zip}"), RemoteFile(f"{base}/{self.images_zip}")

    def file_name(self, image_id: int) -> str:
        return self.file_pattern.format(int(image_id))


COCO2014 = CocoSplit(
    "coco2014",
    "annotations/annotations_trainval2014.zip",
    "zips/val2014.zip",
    "captions_val2014.json",
    "val2014",
    "COCO_val2014_{:012d}.jpg",
    COCO_COUNTS["coco2014"],
)
COCO2017 = CocoSplit(
    "coco2017",
    "annotations/annotations_trainval2017.zip",
    "zips/val2017.zip",
    "captions_val2017.json",
    "val2017",
    "{:012d}.jpg",
    COCO_COUNTS["coco2017"],
)
SPLITS = {split.name: split for split in (COCO2014, COCO2017)}


@dataclass(frozen=True)
class CocoImage:
    """One val image with its normalised captions in annotation-id order."""

    image_id: int
    file_name: str
    captions: tuple[str, ...]


def parse_captions(data, *, source: str = "captions json") -> list[CocoImage]:
    """The images of a COCO captions file (``{"images": [...], "annotations": [...]}``), sorted by id.

    Images whose captions are all empty (or that have none) are left out. Raises
    ``ValueError`` naming ``source`` and the offending entry for anything malformed.
    """
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise ValueError(f'{source}: expected a COCO captions object with "images" and "annotations" lists')
    files: dict[int, str] = {}
    for i, image in enumerate(data["images"]):
        if (
            not isinstance(image, dict)
            or not isinstance(image.get("id"), int)
            or not isinstance(image.get("file_name"), str)
        ):
            raise ValueError(f'{source}: images[{i}] needs an integer "id" and a string "file_name"')
        files[image["id"]] = Path(image["file_name"]).name
    captions: dict[int, list[tuple[int, str]]] = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or ann.get("image_id") not in files:
            raise ValueError(
                f'{source}: annotations[{i}] needs a string "caption" and the "image_id" of a listed image'
            )
        text = normalize_caption(ann["caption"])
        if text:
            captions.setdefault(ann["image_id"], []).append((int(ann.get("id", i)), text))
    return [
        CocoImage(image_id, files[image_id], tuple(text for _, text in sorted(captions[image_id])))
        for image_id in sorted(captions)
    ]


def _draws(n: int, *, seed: int, stream: int) -> np.ndarray:
    return np.asarray(np.random.PCG64(np.random.SeedSequence([seed, stream])).random_raw(n), dtype=np.uint64)


def select_captions(images: Sequence[CocoImage], *, count: int, seed: int) -> list[tuple[CocoImage, str]]:
    """``count`` distinct images and one caption each, in selection order (see the module doc)."""
    _check_int(count=count, seed=seed)
    order_ids = [image.image_id for image in images]
    if order_ids != sorted(order_ids) or len(set(order_ids)) != len(order_ids):
        raise ValueError("select_captions: images must be sorted by unique image id (as parse_captions returns them)")
    if count < 1 or count > len(images):
        raise ValueError(f"count must be between 1 and the {len(images)} captioned images, got {count}")
    order = np.argsort(_draws(len(images), seed=seed, stream=0), kind="stable")[:count]
    picks = _draws(len(images), seed=seed, stream=1)
    return [(images[j], images[j].captions[int(picks[j]) % len(images[j].captions)]) for j in order.tolist()]


def _check_int(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _find(split: CocoSplit, local: Path | None) -> tuple[dict, dict]:
    """``({"json"|"zip": path}, {"dir"|"zip": path})``: the annotation and image sources found in
    ``local`` (empty dicts where none is there; :func:`prepare_coco` then downloads the archives)."""
    ann, img = {}, {}
    annotations_zip, images_zip = Path(split.annotations_zip).name, Path(split.images_zip).name
    if local is not None:
        for candidate in (local / "annotations" / split.captions_json, local / split.captions_json):
            if candidate.is_file() and not ann:
                ann = {"json": candidate}
        if not ann and (local / annotations_zip).is_file():
            ann = {"zip": local / annotations_zip}
        if (local / split.image_dir).is_dir():
            img = {"dir": local / split.image_dir}
        elif (local / images_zip).is_file():
            img = {"zip": local / images_zip}
    return ann, img


def _load_annotations(source: dict, split: CocoSplit) -> list[CocoImage]:
    kind, path = next(iter(source.items()))
    try:
        if kind == "json":
            return parse_captions(json.loads(path.read_text(encoding="utf-8")), source=str(path))
        member = f"annotations/{split.captions_json}"
        with zipfile.ZipFile(path) as archive, archive.open(member) as handle:
            return parse_captions(json.load(io.TextIOWrapper(handle, encoding="utf-8")), source=f"{path}:{member}")
    except KeyError:
        raise ValueError(f"{path}: the archive has no member annotations/{split.captions_json}") from None
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the captions ({error})") from None


def _image_names(source: dict) -> dict[str, object]:
    """Image file name -> where it is (a path in a folder, or a ZipInfo)."""
    kind, path = next(iter(source.items()))
    if kind == "dir":
        return {p.name: p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")}
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [
                i for i in archive.infolist() if not i.is_dir() and Path(i.filename).suffix.lower() in _IMAGE_SUFFIXES
            ]
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path}: not a readable zip archive ({error})") from None
    return {Path(info.filename).name: info for info in infos}


def _materialise(source: dict, names: list[str], *, cache: Path, progress: bool) -> dict[str, Path]:
    """The paths of ``names``: in the folder source, or extracted from the zip into ``cache``
    (one atomic file each; files already there with the right size are kept)."""
    kind, path = next(iter(source.items()))
    available = _image_names(source)
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(f"{path}: {len(missing)} image(s) of the selection are missing, e.g. {missing[:3]}")
    if kind == "dir":
        return {name: available[name] for name in names}
    with zipfile.ZipFile(path) as archive:
        for name in tqdm(names, desc=f"extract {path.name}", disable=not progress, leave=False):
            target, info = cache / name, available[name]
            if target.is_file() and target.stat().st_size == info.file_size:
                continue
            with archive.open(info) as src, atomic_open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return {name: cache / name for name in names}


def link_folder(files: dict[str, Path], dest: Path) -> Path:
    """Replace ``dest`` by a folder of symbolic links ``name -> absolute path`` (hard link or
    copy where links fail), built beside it and swapped in only when complete."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, src in files.items():
        try:
            os.symlink(src.resolve(), tmp / name)
        except OSError:
            try:
                os.link(src, tmp / name)
            except OSError:
                shutil.copy2(src, tmp / name)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists() or dest.is_symlink():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)  # links only: their targets stay
    return dest


def _count_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def prepare_coco(
    split: CocoSplit | str,
    *,
    out: str | os.PathLike,
    local: str | os.PathLike | None = None,
    seed: int = 0,
    count: int | None = None,
    captions_file: str | os.PathLike | None = None,
    reference: str | None = None,
    base_url: str = BASE_URL,
    progress: bool = True,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Write a COCO caption set and its FID reference folder (see the module doc); return the paths.

    A one-line summary goes to stderr; ``progress`` switches the progress bars.

    ``count`` defaults to the split's (30,000 / 5,000); with ``captions_file`` (a path, or a hub file
    ``hf://<owner>/<repo>/<path>``: DMD2's ``hf://tianweiy/DMD2/data/coco/captions_coco14_test.pkl``)
    its first ``count`` captions are used (all without ``count``; more than it holds is an error).
    Returns ``{"prompts", "info"}`` plus
    ``"images"`` and ``"reference"`` where written.
    """
    split = SPLITS[split] if isinstance(split, str) and split in SPLITS else split
    if not isinstance(split, CocoSplit):
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    _check_int(seed=seed, **({} if count is None else {"count": count}))
    if reference is not None and reference not in REFERENCE_MODES:
        raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {reference!r}")
    out, local = Path(out), None if local is None else Path(local)
    if local is not None and not local.is_dir():
        raise FileNotFoundError(f"--local directory {local} does not exist")
    named = str(captions_file) if captions_file is not None else None
    if named is not None and named.startswith(HUB_SCHEME):  # e.g. DMD2's list on the hub
        hint = "or pass --local DIR with a directory holding it"
        captions_file = hub_file(named, local=local, downloads=out / "downloads" / "captions", hint=hint)
    if captions_file is not None:  # cheap checks first, before any download
        captions, files = read_caption_file(captions_file, split=split)
        if count is not None and count > len(captions):
            raise ValueError(f"caption file {captions_file} holds {len(captions)} captions, fewer than --count {count}")
        if count is not None:  # the first `count`, as DMD2's evaluation takes its total_eval_samples
            captions, files = captions[:count], None if files is None else files[:count]
        if reference == "selected" and files is None:
            raise ValueError(f"caption file {captions_file} names no images; use reference 'all' or 'none'")
        source = {"captions_file": str(Path(captions_file).resolve()), "captions": named}
    downloads = out / "downloads"
    ann, img = _find(split, local)
    need_ann, need_img = captions_file is None, reference != "none"
    annotations_remote, images_remote = split.remotes(base_url)
    fetch = [
        r
        for r, need, found in ((annotations_remote, need_ann, ann), (images_remote, need_img, img))
        if need and not found
    ]
    if fetch:
        hint = (
            f"or pass --local DIR with a directory holding {Path(split.annotations_zip).name} and "
            f"{Path(split.images_zip).name} (or their extracted annotations/{split.captions_json} and "
            f"{split.image_dir}/ folder)"
        )
        fetched = ensure_files(fetch, directory=downloads, hint=hint, progress=progress, timeout=timeout)
        paths = {remote.name: path for remote, path in zip(fetch, fetched)}
        ann = ann or ({"zip": paths[annotations_remote.name]} if need_ann else {})
        img = img or ({"zip": paths[images_remote.name]} if need_img else {})
    if captions_file is None:
        count = split.default_count if count is None else count
        chosen = select_captions(_load_annotations(ann, split), count=count, seed=seed)
        captions, files = [caption for _, caption in chosen], [image.file_name for image, _ in chosen]
        source = {"annotations": str(next(iter(ann.values())).resolve()), "seed": seed}
    if files is not None and len(set(files)) != len(files):
        print(f"note: {len(files) - len(set(files))} image(s) repeat in the caption list", file=sys.stderr)
    reference = reference or ("selected" if files is not None else "all")
    names: list[str] = []
    if reference != "none":  # every image in place before any output changes
        names = sorted(set(files)) if reference == "selected" else sorted(_image_names(img))
        images = _materialise(img, names, cache=out / split.name / split.image_dir, progress=progress)

    dest = out / f"{split.name}-{_count_label(len(captions))}"
    written = {"prompts": write_prompts(dest / "prompts.txt", captions)}
    if files is not None:
        written["images"] = atomic_write_text(dest / "images.txt", "".join(f"{name}\n" for name in files))
    else:
        (dest / "images.txt").unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    if reference != "none":
        written["reference"] = link_folder(images, dest / "reference")
    else:
        shutil.rmtree(dest / "reference", ignore_errors=True)
    info = {
        "split": split.name,
        "count": len(captions),
        **source,
        "reference": reference,
        "reference_images": len(names),
        "images_source": str(next(iter(img.values())).resolve()) if reference != "none" else None,
    }
    written["info"] = atomic_write_text(dest / "info.json", json.dumps(info, indent=2) + "\n")
    print(
        f"{split.name}: {len(captions)} captions -> {written['prompts']}; reference: {info['reference_images']} "
        f"image(s) ({reference})",
        file=sys.stderr,
    )
    return written


def check_reference_mode(folder: str | os.PathLike, mode: str) -> None:
    """Refuse a COCO set folder whose FID reference was made with another ``mode`` than the one
    asked for (its ``info.json`` says which): a folder prepared by hand, e.g. with the CLI's default
    "selected" where the config asks for "all", would otherwise give FIDs against another reference."""
    if mode not in REFERENCE_MODES:
        raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {mode!r}")
    path = Path(folder) / "info.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; prepare the set with `python -m dkd data` or the workflow")
    info = json.loads(path.read_text())
    if info.get("reference") != mode:
        raise ValueError(
            f"{path}: the reference folder was made with reference={info.get('reference')!r}, the config asks "
            f"for {mode!r} (data.<set>.reference). Delete {folder} and let the workflow rebuild it, or run "
            f"`python -m dkd data {info.get('split', '<split>')} --reference {mode}`."
        )
