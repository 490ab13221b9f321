"""Resumable, verified, atomic downloads of plain URLs (the COCO archives), offline-aware.

A file ``name`` from ``url`` lands in ``directory/name`` in three steps:

1. bytes stream into ``directory/name.part``; an existing ``.part`` is resumed with an HTTP
   ``Range`` request (a ``file://`` URL is read from the same offset; a server that ignores
   ``Range`` and answers 200 restarts the file from byte 0);
2. the complete ``.part`` is checked: its size against the server's and the expected size,
   its SHA-256 / MD5 against the expected ones where known. A mismatch moves it aside to
   ``name.corrupt`` (nothing is lost, nothing is marked complete) and raises
   :class:`ChecksumError`;
3. it is fsynced and renamed to ``name``, and its size, SHA-256 and MD5 are recorded in the
   manifest ``directory/checksums.json`` (rewritten atomically).

A later run finds ``name``, re-hashes it and compares it with the manifest (and the expected
checksums): a match skips the download, a mismatch raises. A file placed there by hand, with
no manifest entry yet, is checked against what is expected and then recorded.

Offline (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to 1/true/yes/on, read at call
time, or huggingface_hub's own flag), nothing is requested: :func:`ensure_files` raises ONE
:class:`DataUnavailableError` that lists, for every missing file, its URL, its file name, the
directory to put it in, and the caller's hint (the ``--local`` flag). A network failure
raises the same error for that file and the ones not fetched yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from tqdm.auto import tqdm

from ..io import atomic_write_text

MANIFEST = "checksums.json"
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}
_CHUNK = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError)


class DataUnavailableError(FileNotFoundError):
    """A required file is neither present nor downloadable; the message says what to put where."""


class ChecksumError(ValueError):
    """A file's size or checksum differs from the expected or recorded one."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its URL, the local file name (default: the URL's last part) and
    whatever is known to verify it (``size`` in bytes, hex ``sha256`` / ``md5``)."""

    url: str
    name: str = ""
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlparse(self.url).scheme
        if scheme not in ("http", "https", "file"):
            raise ValueError(f"RemoteFile.url must be an http(s):// or file:// URL, got {self.url!r}")
        if not self.name:
            object.__setattr__(self, "name", urllib.parse.unquote(self.url.rstrip("/").rsplit("/", 1)[-1]))
        if not self.name or "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise ValueError(f"RemoteFile.name must be a plain file name, got {self.name!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0):
            raise ValueError(f"RemoteFile.size must be a non-negative integer, got {self.size!r}")
        for key, length in (("sha256", 64), ("md5", 32)):
            value = getattr(self, key)
            if value is not None:
                if not isinstance(value, str) or not re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value):
                    raise ValueError(f"RemoteFile.{key} must be {length} hex digits, got {value!r}")
                object.__setattr__(self, key, value.lower())


def is_offline() -> bool:
    """Whether downloads are forbidden: ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` truthy now,
    or huggingface_hub's flag (read when it was imported)."""
    if any(os.environ.get(name, "").strip().upper() in _TRUE for name in OFFLINE_ENV):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return False
    return bool(constants.HF_HUB_OFFLINE)


def placement_message(missing: Sequence[tuple[str, str, Path]], *, reason: str, hint: str = "") -> str:
    """One message for every missing ``(url, file name, directory)``: what to put where, and ``hint``."""
    lines = [f"{len(missing)} required file(s) missing and not downloadable ({reason}). Put:"]
    for url, name, directory in missing:
        lines.append(f"  - {name}  (from {url})  into the directory {directory}/")
    lines.append("then run the command again" + (f"; {hint}" if hint else "."))
    return "\n".join(lines)


def file_digests(path: str | os.PathLike, *, progress: bool = False) -> dict:
    """``{"size", "sha256", "md5"}`` of a file, read once in 1 MiB chunks."""
    path = Path(path)
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = path.stat().st_size
    with open(path, "rb") as handle, _bar(size, 0, f"verify {path.name}", progress) as bar:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            bar.update(len(chunk))
    return {"size": size, "sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest ``directory/checksums.json`` as ``{name: {"size", "sha256", "md5", "url"}}`` ({} if absent)."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ChecksumError(f"{path}: unreadable checksum manifest ({error}); delete it to re-verify") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ChecksumError(f"{path}: checksum manifest must map file names to objects; delete it to re-verify")
    return data


def _record(directory: Path, name: str, entry: dict) -> None:
    manifest = read_manifest(directory)
    manifest[name] = entry
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _compare(path: Path, digests: dict, expected: dict, *, what: str) -> None:
    """ChecksumError naming ``path`` and the first of size/sha256/md5 that ``expected`` has and differs."""
    for key in ("size", "sha256", "md5"):
        if expected.get(key) is not None and expected[key] != digests[key]:
            raise ChecksumError(f"{path}: {key} is {digests[key]}, {what} {expected[key]}")


def verify_file(path: Path, remote: RemoteFile, *, progress: bool = True) -> dict:
    """Hash ``path`` and check it against ``remote``'s expectations and its manifest entry; record it."""
    digests = file_digests(path, progress=progress)
    _compare(path, digests, {"size": remote.size, "sha256": remote.sha256, "md5": remote.md5}, what="expected")
    recorded = read_manifest(path.parent).get(path.name)
    if recorded is not None:
        _compare(path, digests, recorded, what="but the manifest recorded")
    else:
        _record(path.parent, path.name, {**digests, "url": remote.url})
    return digests


def _bar(total: int | None, initial: int, desc: str, progress: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        leave=False,
    )


def _open_stream(url: str, offset: int, *, timeout: float):
    """``(readable, total_size or None, start)``: the resource from byte ``offset`` where the
    source allows it (``start == offset``), else from byte 0 (``start == 0``)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        total = path.stat().st_size
        handle = open(path, "rb")
        start = offset if offset <= total else 0
        handle.seek(start)
        return handle, total, start
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        total = _content_range_total(error.headers.get("Content-Range", "")) if error.code == 416 else None
        if error.code == 416 and total == offset:  # the .part already holds every byte
            return _Empty(), total, offset
        if error.code == 416 and offset:  # the .part is longer than the file: start afresh
            return _open_stream(url, 0, timeout=timeout)
        raise
    if response.status == 206:
        total = _content_range_total(response.headers.get("Content-Range", ""))
        if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            response.close()
            raise HTTPException(f"server answered the range request with {response.headers.get('Content-Range')!r}")
        return response, total, offset
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None, 0


def _content_range_total(header: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", header)
    return int(match.group(1)) if match else None


class _Empty:
    def read(self, _size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _hash_prefix(path: Path, sha, md5) -> int:
    """Feed the bytes already in ``path`` to the hashers; return their count."""
    count = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            count += len(chunk)
    return count


def download_file(
    remote: RemoteFile, *, directory: str | os.PathLike, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Fetch ``remote`` into ``directory/remote.name`` (resume, verify, rename, record); see the module doc.

    An already complete file is verified and returned without a request. Raises
    :class:`ChecksumError` on a mismatch and lets network errors (``urllib.error.URLError``,
    ``http.client.HTTPException``, ``OSError``) through with the ``.part`` kept for a resume;
    :func:`ensure_files` turns those into :class:`DataUnavailableError`. Does not check
    :func:`is_offline` (``ensure_files`` does).
    """
    directory = Path(directory)
    dest = directory / remote.name
    if dest.is_file():
        verify_file(dest, remote, progress=progress)
        return dest
    directory.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    stream, total, start = _open_stream(remote.url, offset, timeout=timeout)
    try:
        if remote.size is not None and total is not None and total != remote.size:
            raise ChecksumError(f"{remote.url}: the source has {total} bytes, expected {remote.size}")
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        written = _hash_prefix(part, sha, md5) if start else 0
        with open(part, "ab" if start else "wb") as out, _bar(total, written, remote.name, progress) as bar:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    finally:
        stream.close()
    digests = {"size": written, "sha256": sha.hexdigest(), "md5": md5.hexdigest()}
    try:
        if total is not None and written != total:
            raise ChecksumError(f"{remote.url}: received {written} bytes, the source announced {total}")
        _compare(part, digests, {"size": remote.size, "sha256": remote.sha256, "md5": remote.md5}, what="expected")
    except ChecksumError as error:
        corrupt = dest.with_name(dest.name + ".corrupt")
        os.replace(part, corrupt)
        raise ChecksumError(f"{error}; the bytes were moved to {corrupt} and nothing was marked complete") from None
    os.replace(part, dest)
    _record(directory, remote.name, {**digests, "url": remote.url})
    return dest


def ensure_files(
    remotes: Sequence[RemoteFile],
    *,
    directory: str | os.PathLike,
    hint: str = "",
    progress: bool = True,
    timeout: float = 60.0,
) -> list[Path]:
    """Each of ``remotes`` as a verified file in ``directory``, downloading what is missing.

    Offline, or after a network error, raises ONE :class:`DataUnavailableError` listing each
    file still missing (URL, file name, ``directory``) and ``hint``.
    """
    directory = Path(directory)
    missing = [r for r in remotes if not (directory / r.name).is_file()]
    if missing and is_offline():
        listed = [(r.url, r.name, directory) for r in missing]
        raise DataUnavailableError(placement_message(listed, reason="offline: HF_HUB_OFFLINE is set", hint=hint))
    paths = []
    for index, remote in enumerate(remotes):
        try:
            paths.append(download_file(remote, directory=directory, progress=progress, timeout=timeout))
        except Exception as error:
            if not (isinstance(error, _NETWORK_ERRORS) or _is_source_error(error, remote)):
                raise  # a checksum mismatch or a local disk problem: not a download problem
            rest = [r for r in remotes[index:] if not (directory / r.name).is_file()]
            listed = [(r.url, r.name, directory) for r in rest]
            reason = f"download of {remote.url} failed: {error}"
            if (directory / f"{remote.name}.part").is_file():
                reason += f"; the partial {remote.name}.part is kept and a rerun resumes it"
            raise DataUnavailableError(placement_message(listed, reason=reason, hint=hint)) from None
    return paths


def _is_source_error(error: Exception, remote: RemoteFile) -> bool:
    """Whether ``error`` is an OSError about the ``file://`` source itself (not about our output)."""
    parsed = urllib.parse.urlparse(remote.url)
    if parsed.scheme != "file" or not isinstance(error, OSError):
        return False
    return getattr(error, "filename", None) == urllib.request.url2pathname(parsed.path)
