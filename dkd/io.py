"""Atomic output: a killed job never leaves a file that looks complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Stream into a temporary file beside ``path``; rename it into place only on success.

    ``mode`` is ``"w"`` (text, UTF-8, ``"\\n"`` line endings) or ``"wb"``. On a clean exit the
    handle is flushed, fsynced and closed, then ``os.replace``d onto ``path``; if the body
    raises, the temporary file is removed and an existing ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode == "w":
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        else:
            handle = os.fdopen(fd, "wb")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)
