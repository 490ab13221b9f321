"""Prompt files for distillation (JourneyDB, COCO captions, HPSv2 prompts) and their batch order.

Formats, chosen by the file name's suffix (case-insensitive):

``.txt``      one prompt per line;
``.jsonl``    one JSON object per line with a string field ``"prompt"`` (other fields ignored);
``.txt.gz`` / ``.jsonl.gz``   the same, gzip-compressed.

Reading streams the file line by line in binary mode (lines end at ``b"\\n"``; a trailing
``"\\r"`` goes with the surrounding whitespace), decodes each line as strict UTF-8 and strips
the prompt. Empty prompts are the only thing skipped, and they are counted
(:attr:`PromptSet.skipped_empty`); every other problem raises one :class:`PromptFileError`
naming the file and the 1-based line.

Batch order: :func:`epoch_permutation` is a pure function of ``(n, seed, epoch)``, so a resumed
run draws at step ``k`` (:func:`step_batch`) what the uninterrupted run drew.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_open

SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
_JSON = json.JSONEncoder(ensure_ascii=False)  # one encoder: json.dumps(..., ensure_ascii=False) builds one per call
_CHUNK = 4096  # lines per write call


class PromptFileError(ValueError):
    """A prompt file that cannot be read or written as asked; the message names file and line."""


@dataclass(frozen=True)
class PromptSet:
    """The prompts of one file, stripped and non-empty, in file order."""

    prompts: tuple[str, ...]
    skipped_empty: int
    source: str

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index):
        return self.prompts[index]


def _format(path: Path) -> tuple[str, bool]:
    """``("txt" | "jsonl", gzipped)`` from the suffix, or :class:`PromptFileError`."""
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix.split(".")[1], suffix.endswith(".gz")
    raise PromptFileError(f"{path}: unknown prompt file suffix; accepted: {', '.join(SUFFIXES)}")


def _decode(raw: bytes, *, path: Path, lineno: int) -> str:
    """One line as strict UTF-8 (a byte-order mark at the start of the file is dropped)."""
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise PromptFileError(f"{path}, line {lineno}: invalid UTF-8 ({error.reason} at byte {error.start})") from None


def _jsonl_prompt(line: str, *, path: Path, lineno: int) -> str:
    """The ``"prompt"`` string of one non-blank JSON Lines line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise PromptFileError(f"{path}, line {lineno}: invalid JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(record, dict):
        raise PromptFileError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
    if "prompt" not in record:
        raise PromptFileError(f'{path}, line {lineno}: JSON object has no "prompt" key')
    prompt = record["prompt"]
    if not isinstance(prompt, str):
        raise PromptFileError(f'{path}, line {lineno}: "prompt" must be a string, got {type(prompt).__name__}')
    return prompt


def _raw_lines(path: Path, *, gzipped: bool) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, bytes)`` streamed from the file; gzip damage is a PromptFileError."""
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as handle:
            yield from enumerate(handle, start=1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise PromptFileError(f"{path}: not a valid gzip file ({error})") from None
    except OSError as error:
        raise PromptFileError(f"{path}: cannot read prompt file ({error})") from None


def read_prompts(path: str | os.PathLike) -> PromptSet:
    """Read a ``.txt`` / ``.jsonl`` (optionally ``.gz``) prompt file, streaming line by line.

    Each prompt is stripped of surrounding whitespace; empty ones (blank lines, and in JSON
    Lines also prompts that are empty after stripping) are skipped and counted. Raises
    :class:`PromptFileError` for a missing file, an unknown suffix, invalid UTF-8 or JSON, a
    JSON line that is not an object with a string ``"prompt"``, or a file with no prompt.
    """
    path = Path(path)
    kind, gzipped = _format(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    prompts: list[str] = []
    skipped = 0
    for lineno, raw in _raw_lines(path, gzipped=gzipped):
        line = _decode(raw, path=path, lineno=lineno).strip()
        if line and kind == "jsonl":
            line = _jsonl_prompt(line, path=path, lineno=lineno).strip()
        if line:
            prompts.append(line)
        else:
            skipped += 1
    if not prompts:
        raise PromptFileError(f"{path}: empty prompt file ({skipped} empty line(s), no prompt)")
    return PromptSet(prompts=tuple(prompts), skipped_empty=skipped, source=str(path))


def _encode(prompt: str, *, kind: str, path: Path, lineno: int) -> bytes:
    """One output line as UTF-8 bytes; refuses a prompt that :func:`read_prompts` would skip or split."""
    if not isinstance(prompt, str):
        raise PromptFileError(f"{path}, line {lineno}: prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise PromptFileError(f"{path}, line {lineno}: refusing to write an empty prompt")
    if kind == "txt" and ("\n" in prompt or "\r" in prompt):
        raise PromptFileError(f"{path}, line {lineno}: prompt contains a line break; .txt holds one prompt per line")
    line = prompt if kind == "txt" else _JSON.encode({"prompt": prompt})
    try:
        return (line + "\n").encode("utf-8")
    except UnicodeEncodeError as error:
        raise PromptFileError(f"{path}, line {lineno}: prompt is not valid UTF-8 text ({error.reason})") from None


def write_prompts(path: str | os.PathLike, prompts: Iterable[str]) -> Path:
    """Write prompts to a ``.txt`` / ``.jsonl`` (optionally ``.gz``) file atomically.

    Streams into a temporary file beside ``path`` (:func:`dkd.io.atomic_open`) that replaces
    ``path`` only once every prompt is written; on any error the temporary file is removed and
    an existing ``path`` is unchanged. Raises :class:`PromptFileError` for an unknown suffix, a
    non-string or empty (after stripping) prompt, a line break in a ``.txt`` prompt, or no
    prompts at all. Surrounding whitespace is written as given; :func:`read_prompts` strips it.
    """
    path = Path(path)
    kind, gzipped = _format(path)
    with atomic_open(path, "wb") as raw:
        # mtime=0: the same prompts give the same bytes.
        handle = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if gzipped else raw
        count, chunk = 0, []
        for count, prompt in enumerate(prompts, start=1):
            chunk.append(_encode(prompt, kind=kind, path=path, lineno=count))
            if len(chunk) == _CHUNK:
                handle.write(b"".join(chunk))
                chunk.clear()
        handle.write(b"".join(chunk))
        if count == 0:
            raise PromptFileError(f"{path}: refusing to write an empty prompt file")
        if gzipped:
            handle.close()  # writes the gzip trailer; leaves ``raw`` open
    return path


def _check_non_negative(**values: int) -> None:
    """``ValueError`` unless every value is a non-negative integer (``bool`` excluded)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def epoch_permutation(n: int, *, seed: int, epoch: int, stream: int = 0) -> list[int]:
    """The order of ``range(n)`` in epoch ``epoch``: a uniform random permutation.

    ``argsort`` (stable) of ``n`` raw 64-bit draws of numpy's ``PCG64`` seeded with
    ``SeedSequence([seed, epoch])``. Bit generators and ``SeedSequence`` have a fixed stream
    across numpy versions (``Generator.permutation`` does not promise that), and ``(seed, epoch)``
    are mixed as a pair, so ``(1, 0)`` and ``(0, 1)`` give unrelated orders. ``stream`` > 0 gives
    further orders unrelated to stream 0's (``SeedSequence([seed, epoch, stream])``; e.g. the fresh
    prompts of a fake model's phase).
    """
    _check_non_negative(n=n, seed=seed, epoch=epoch, stream=stream)
    entropy = [int(seed), int(epoch)] + ([int(stream)] if stream else [])
    keys = np.random.PCG64(np.random.SeedSequence(entropy)).random_raw(int(n))
    return np.argsort(np.asarray(keys, dtype=np.uint64), kind="stable").tolist()


def step_batch(n: int, batch_size: int, *, seed: int, step: int, stream: int = 0) -> list[int]:
    """The prompt indices of training step ``step`` (0-based): a pure function of its arguments, so a
    run resumed at any step draws what the uninterrupted run drew.

    Each epoch is a fresh :func:`epoch_permutation` cut into ``n // batch_size`` consecutive full
    batches; the ``n % batch_size`` prompts left at an epoch's end are not used in that epoch.
    ``stream`` selects an independent order (:func:`epoch_permutation`).
    """
    _check_non_negative(n=n, batch_size=batch_size, seed=seed, step=step)
    if batch_size == 0 or n < batch_size:
        raise ValueError(f"a batch of {batch_size} needs at least {max(batch_size, 1)} prompts, got {n}")
    epoch, position = divmod(step, n // batch_size)
    order = epoch_permutation(n, seed=seed, epoch=epoch, stream=stream)
    return order[position * batch_size : (position + 1) * batch_size]
