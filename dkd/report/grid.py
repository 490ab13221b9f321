"""Sample grids of the report: the first images of an evaluation set, side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..io import atomic_open


def image_grid(paths: Sequence[str | os.PathLike], *, columns: int = 8, cell: int = 128) -> Image.Image:
    """An RGB grid of the images at ``paths`` (row-major, ``columns`` per row), each resized to
    ``cell`` x ``cell`` pixels (nearest neighbour when enlarging, so 8x8 digits stay sharp)."""
    if not paths:
        raise ValueError("image_grid needs at least one image.")
    if columns <= 0 or cell <= 0:
        raise ValueError(f"columns and cell must be > 0; got {columns}, {cell}.")
    rows = -(-len(paths) // columns)
    grid = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            image = image.convert("RGB")
            resample = Image.NEAREST if image.width < cell else Image.LANCZOS
            grid.paste(image.resize((cell, cell), resample), ((i % columns) * cell, (i // columns) * cell))
    return grid


def save_grid(paths: Sequence[str | os.PathLike], out: str | os.PathLike, **kwargs) -> Path:
    """:func:`image_grid` written atomically as a PNG."""
    with atomic_open(out, "wb") as handle:
        image_grid(paths, **kwargs).save(handle, format="PNG")
    return Path(out)
