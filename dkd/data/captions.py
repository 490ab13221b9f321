"""Caption lists read as they are (``captions_file`` of :func:`dkd.data.coco.prepare_coco`): DMD2's
``captions_coco14_test.pkl`` (a pickled list of strings, read without executing anything), ``.txt`` /
``.jsonl`` (``.gz``), a JSON list of strings, or a CSV with a ``caption`` column, whose
``file_name``, ``image_id`` or GigaGAN ``uid`` (``<image id>_mscoco_<k>``) column gives each
caption's image."""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
from pathlib import Path

from .prompts import PromptFileError, read_prompts


def normalize_caption(text: str) -> str:
    """Collapse every whitespace run (line breaks too) to one space and strip the ends."""
    return " ".join(text.split())


class _NoGlobals(pickle.Unpickler):
    """Unpickles plain containers and strings only: a caption list never needs a class."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a caption list holds strings only)")


def read_caption_file(path: str | os.PathLike, *, split=None) -> tuple[list[str], list[str] | None]:
    """``(captions, image file names or None)`` of a caption list, normalised, in file order; ``split``
    (a :class:`dkd.data.coco.CocoSplit`, default COCO2014) names the images of a CSV's image ids.

    Raises ``ValueError`` (:class:`PromptFileError` for text formats) naming the file and
    entry for an unreadable file, a non-string or empty caption, or a bad image id.
    """
    if split is None:
        from .coco import COCO2014 as split
    path = Path(path)
    suffix = path.name.lower().rsplit(".", 1)[-1]
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} not found")
    files: list[str] | None = None
    try:
        if suffix in ("pkl", "pickle"):
            with open(path, "rb") as handle:
                entries = _NoGlobals(handle).load()
        elif suffix == "json":
            entries = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == "csv":
            entries, files = _read_csv(path, split)
        else:
            prompts = read_prompts(path)
            if prompts.skipped_empty:
                raise ValueError(f"{prompts.skipped_empty} empty caption(s); caption i must be line i")
            entries = list(prompts.prompts)
    except (PromptFileError, FileNotFoundError):
        raise
    except (OSError, ValueError, pickle.UnpicklingError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"caption file {path}: {error}") from None
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"caption file {path}: expected a list of captions, got {type(entries).__name__}")
    captions = []
    for i, entry in enumerate(entries):
        text = normalize_caption(entry) if isinstance(entry, str) else None
        if not text:
            raise ValueError(f"caption file {path}: entry {i} is {entry!r}, not a non-empty caption")
        captions.append(text)
    if not captions:
        raise ValueError(f"caption file {path}: no captions")
    return captions, files


def _read_csv(path: Path, split) -> tuple[list[str], list[str] | None]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "caption" not in rows[0]:
        raise ValueError('a CSV caption file needs a header with a "caption" column')
    key = next((k for k in ("file_name", "image_id", "uid") if k in rows[0]), None)
    files = None
    if key is not None:
        files = []
        for i, row in enumerate(rows, start=2):
            value = (row[key] or "").strip()
            if key == "file_name":
                files.append(Path(value).name)
                continue
            match = re.fullmatch(r"(\d+)(_mscoco_\d+)?", value)
            if not match or (key == "uid") != bool(match.group(2)):
                raise ValueError(f"line {i}: {key} {value!r} is not a COCO image id")
            files.append(split.file_name(int(match.group(1))))
    return [row["caption"] for row in rows], files
