"""Image folders of the COCO evaluation: listing and the 256-pixel preprocessing.

``docs/reference.md`` section 3: both the reference images (COCO val2014) and every
generated set are center-cropped on the long side and resized to 256 x 256 with PIL's
LANCZOS filter *before* FID; clean-fid then reads the 256-pixel PNGs (its own ``mode="clean"``
resize to 299 happens inside its data loader).

Listing rules shared by every metric: files ending in ``.png``, ``.jpg``, ``.jpeg`` or
``.webp`` (any case), sorted by their path relative to the folder; names starting with ``.``
are skipped, so the temporary files of an atomic write in progress are never counted.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from ..io import atomic_open

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
SIZE = 256


def to_rgb(image: Image.Image | str | os.PathLike) -> Image.Image:
    """An RGB copy of a PIL image or of an image file (closed after reading)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as img:
        return img.convert("RGB")


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` (sub-folders too when ``recursive``), sorted by relative path.

    Hidden files (a leading ``.``, e.g. the temporary file of an atomic write) are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist or is not a folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = [
        path
        for path in candidates
        if path.suffix.lower() in EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    ]
    return sorted(files, key=lambda path: path.relative_to(folder).as_posix())


def center_crop_resize(img: Image.Image, size: int = SIZE) -> Image.Image:
    """Crop the long side of ``img`` to a centred square, then LANCZOS-resize it to ``size`` (RGB).

    ``docs/reference.md`` section 3. The offsets round as torchvision's ``center_crop`` (DMD2's
    evaluation) does: ``left = round((w - s) / 2)`` with Python's half-to-even rounding, so an
    odd difference of 3 mod 4 puts the extra pixel on the left, of 1 mod 4 on the right.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    img = img.convert("RGB")
    width, height = img.size
    side = min(width, height)
    left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))
    square = img.crop((left, top, left + side, top + side))
    return square.resize((size, size), resample=Image.LANCZOS)


def _target(src: Path, dst: Path, path: Path) -> Path:
    return (dst / path.relative_to(src)).with_suffix(".png")


def preprocess_folder(
    src: str | os.PathLike, dst: str | os.PathLike, *, size: int = SIZE, recursive: bool = False
) -> dict:
    """Write ``center_crop_resize(image, size)`` of every image of ``src`` as a PNG under ``dst``.

    The output keeps the relative path with the suffix ``.png`` (``a/b.jpg`` -> ``dst/a/b.png``).
    Each PNG is written atomically (temporary file + ``os.replace``) and a PNG at least as new as
    its source is skipped, so a killed job resumes; ``dst`` follows ``src``: a PNG older than its
    source (an image generated again, e.g. after a retrained model) is rewritten, and a PNG whose
    source is gone is removed, so that the metrics never read a stale or foreign image. Two inputs
    mapping to one output (``x.jpg`` and ``x.png``) raise before anything is written. Returns
    ``{"count", "written", "skipped", "removed"}``.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"preprocess_folder: src and dst are the same folder {str(src)!r}")
    files = list_images(src, recursive=recursive)
    if not files:
        raise ValueError(f"preprocess_folder: no images ({', '.join(EXTENSIONS)}) in {str(src)!r}")
    targets: dict[Path, Path] = {}
    for path in files:
        target = _target(src, dst, path)
        if target in targets:
            raise ValueError(
                f"preprocess_folder: {str(targets[target])!r} and {str(path)!r} both map to {str(target)!r}"
            )
        targets[target] = path
    removed = [p for p in list_images(dst, recursive=True) if p not in targets] if dst.is_dir() else []
    for stale in removed:
        stale.unlink()
    written = 0
    for target, path in targets.items():
        if target.exists() and target.stat().st_mtime_ns >= path.stat().st_mtime_ns:
            continue
        with Image.open(path) as img:
            out = center_crop_resize(img, size)
        with atomic_open(target, "wb") as handle:
            out.save(handle, format="PNG")
        written += 1
    return {"count": len(targets), "written": written, "skipped": len(targets) - written, "removed": len(removed)}
