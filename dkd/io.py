"""Atomic output (a killed job never leaves a file that looks complete), and YAML read strictly."""

from __future__ import annotations

import io
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


def image_path(folder: str | os.PathLike, index: int, suffix: str = ".png") -> Path:
    """Image ``index`` of an evaluation set: ``<folder>/<index:05d><suffix>``."""
    return Path(folder) / f"{index:05d}{suffix}"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path`` and swap it in only on success.

    Yields the temporary folder (empty; a leftover of a killed attempt is cleared first). On a
    clean exit an existing ``path`` is removed and the new folder renamed onto it; if the body
    raises, the temporary folder is removed and ``path`` is left as it was.
    """
    import shutil

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


class LockedError(RuntimeError):
    """Another process holds the lock (its host, pid and SLURM job are in the message)."""


@contextmanager
def exclusive(path: str | os.PathLike, what: str = "this folder") -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``path`` (``flock``; created if missing) for the block, or
    raise :class:`LockedError` at once, naming the holder, if another process holds it. The lock
    dies with its process (a SIGKILL leaves nothing to clean up). It guards a folder that two
    attempts must never write at once: e.g. a distillation's checkpoints, when a SLURM job outlives
    the Snakemake that submitted it and a new Snakemake submits the same run again."""
    import fcntl
    import socket

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            raise LockedError(
                f"{path}: {holder} holds the lock of {what}; wait for it to end or stop it "
                "(scancel its SLURM job) before starting again."
            ) from None
        handle.seek(0)
        handle.truncate()
        job = os.environ.get("SLURM_JOB_ID")
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}" + (f", SLURM job {job}" if job else ""))
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Tee(io.TextIOBase):
    """A text stream that writes to several (the rule's log and its history)."""

    def __init__(self, *streams: IO[str]):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextmanager
def rule_log(
    path: str | os.PathLike, threads: int | None = None, *, gpus: int = 0, history: str | os.PathLike | None = None
) -> Iterator[IO]:
    """A workflow rule's log: ``logging`` (INFO, timestamps) and stderr (progress bars, warnings)
    go to ``path``; an exception leaving the block is logged with its traceback. Snakemake deletes
    a job's log before each attempt, so a job that resumes across attempts (a distillation) passes
    ``history``, a file outside its declared outputs where every attempt's lines are appended.
    ``threads``: the job's CPU threads (Snakemake's ``threads``), so that parallel jobs do not
    oversubscribe cores. ``gpus``: the job's GPUs (Snakemake's ``resources.gpus``); on a machine
    that runs several jobs at once, :func:`dkd.gpus.claim_gpu` gives the job that many devices of
    its own for the block (``CUDA_VISIBLE_DEVICES``; one set by SLURM is kept). Enter it before
    anything uses CUDA."""
    import contextlib
    import logging

    from dkd.gpus import claim_gpu

    if threads:
        import sys

        os.environ["OMP_NUM_THREADS"] = str(threads)  # for torch when it is imported later
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    with contextlib.ExitStack() as files:
        streams = [files.enter_context(open(path, "a", buffering=1))]
        if history is not None:
            Path(history).parent.mkdir(parents=True, exist_ok=True)
            streams.append(files.enter_context(open(history, "a", buffering=1)))
        log = streams[0] if len(streams) == 1 else _Tee(*streams)
        files.enter_context(contextlib.redirect_stderr(log))
        logging.basicConfig(stream=log, level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
        try:
            with claim_gpu(gpus or 0):
                yield log
        except BaseException:
            logging.exception("the job failed")
            raise


def read_yaml(path: str | os.PathLike):
    """YAML with duplicate keys refused (plain YAML keeps the last one silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
