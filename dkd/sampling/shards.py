"""Evaluation image sets written to disk in shards, by any sampler (one-step students, multi-step
teachers, published checkpoints), one seed per image index (``docs/reference.md`` section 3).

An evaluation set is a list of prompts; image ``i`` is generated from prompt ``i`` with seed
``seed + i`` and written to ``<folder>/<i:05d>.png``: lossless PNG for every set, HPSv2's
included (the ``hpsv2`` package's own layout is ``<style>/<i:05d>.jpg``; its scores differ from
ours only by the JPEG loss). A shard is an index range: images already on disk are skipped, each
image is written atomically, so a killed job resumes and any shard can be regenerated alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..io import image_path
from .samplers import Sampler


def _save_atomic(image: Image.Image, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        image.save(tmp, quality=95) if path.suffix in (".jpg", ".jpeg") else image.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _match_fingerprint(folder: Path, start: int, end: int, suffix: str, fingerprint: str) -> None:
    marker = folder / f".sampler-{start:05d}-{end:05d}"
    if marker.is_file() and marker.read_text() == fingerprint:
        return
    for index in range(start, end):
        image_path(folder, index, suffix).unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sampler.")
    with os.fdopen(fd, "w") as handle:
        handle.write(fingerprint)
    os.replace(tmp, marker)


def generate_shard(
    sampler: Sampler,
    prompts: Sequence[str],
    folder: str | os.PathLike,
    *,
    start: int = 0,
    end: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    suffix: str = ".png",
    progress: bool = True,
    fingerprint: str | None = None,
) -> dict:
    """Generate images ``start..end-1`` of ``prompts`` into ``folder`` (skipping existing ones).

    ``fingerprint`` identifies the sampler (model weights, settings, seed): when the one recorded
    for this index range differs, the range's images are deleted and generated again, so a
    retrained model never keeps the old model's images. Returns counts:
    ``{"written": n, "skipped": m, "start": start, "end": end}``.
    """
    from tqdm.auto import tqdm

    end = len(prompts) if end is None else min(end, len(prompts))
    if not 0 <= start <= end:
        raise ValueError(f"need 0 <= start <= end <= {len(prompts)}; got start={start}, end={end}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fingerprint is not None:
        _match_fingerprint(folder, start, end, suffix, fingerprint)
    todo = [i for i in range(start, end) if not image_path(folder, i, suffix).is_file()]
    bar = tqdm(total=len(todo), disable=not progress, desc=f"generate {folder.name}")
    for k in range(0, len(todo), batch_size):
        indices = todo[k : k + batch_size]
        images = sampler([prompts[i] for i in indices], [seed + i for i in indices], batch_size=batch_size)
        for index, image in zip(indices, images):
            _save_atomic(image, image_path(folder, index, suffix))
        bar.update(len(indices))
    bar.close()
    return {"written": len(todo), "skipped": end - start - len(todo), "start": start, "end": end}


def sampler_fingerprint(source: str, settings, seed: int, prompts: Sequence[str]) -> str:
    """The identity of a shard's images: the model's files (names, sizes, mtimes; a hub id as
    text), the sampling settings, the seed and the shard's prompts. Images written under another
    fingerprint are regenerated (``generate_shard``)."""
    import hashlib
    import json

    folder = Path(source)
    files = (
        sorted(
            (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")
            if p.is_file()
        )
        if folder.is_dir()
        else str(source)
    )
    identity = json.dumps([files, settings, seed, list(prompts)], default=str)
    return hashlib.sha256(identity.encode()).hexdigest()
