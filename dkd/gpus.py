"""One GPU job per GPU on one machine: exclusive device claims through lock files.

Snakemake counts GPUs (the workflow profile gives it ``resources: gpus=<count>``) but does not say
*which* device a job gets, so two local jobs would both start on ``cuda:0``. :func:`claim_gpu`
picks free devices for a job: it takes an exclusive ``fcntl.flock`` on ``/tmp/dkd-gpu-<i>.lock``
for each device ``i`` it claims and sets ``CUDA_VISIBLE_DEVICES`` for the job (and the processes
it starts, e.g. ``accelerate launch``); leaving the block releases both. The kernel drops a lock
when its process dies, so a killed job never leaves a device claimed. Lock files are never
deleted (deleting one would let two processes lock two different files of the same name).

Nothing is claimed when ``CUDA_VISIBLE_DEVICES`` is already set (SLURM sets it to the job's
allocation), when the job asks for no GPU, or when the machine has none (the job runs on the CPU).
The device count is read without initialising CUDA (``nvidia-smi -L``), since CUDA reads
``CUDA_VISIBLE_DEVICES`` only once, when it starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

COUNT_ENV = "DKD_GPU_COUNT"  # the machine's GPU count, instead of asking nvidia-smi
LOCK_DIR_ENV = "DKD_GPU_LOCK_DIR"  # where the lock files live (default /tmp)
DEFAULT_LOCK_DIR = "/tmp"

log = logging.getLogger(__name__)


class GpuBusyError(TimeoutError):
    """Every device stayed claimed by other jobs for longer than the caller's timeout."""


def count_nvidia_smi_gpus(listing: str) -> int:
    """The number of GPUs in the output of ``nvidia-smi -L`` (one ``GPU <i>: ...`` line each;
    the indented ``MIG ...`` lines of a partitioned GPU are not counted)."""
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def visible_gpu_count() -> int:
    """The GPUs of this machine: ``$DKD_GPU_COUNT`` if set, else the count ``nvidia-smi -L``
    reports, else 0 (no ``nvidia-smi``, or it fails). Never initialises CUDA."""
    override = os.environ.get(COUNT_ENV)
    if override is not None:
        if not override.strip().isdigit():
            raise ValueError(f"environment variable {COUNT_ENV}={override!r}: expected a whole number of GPUs >= 0")
        return int(override)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("nvidia-smi -L failed (%s): counting no GPU", error)
        return 0
    return count_nvidia_smi_gpus(listing)


def lock_path(index: int, lock_dir: str | os.PathLike | None = None) -> Path:
    """The lock file of device ``index``: ``<lock_dir>/dkd-gpu-<index>.lock``; ``lock_dir``
    defaults to ``$DKD_GPU_LOCK_DIR`` or ``/tmp``."""
    return Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR) / f"dkd-gpu-{index}.lock"


def _open_lock(path: Path) -> int:
    """A descriptor of ``path`` to flock, creating the file if needed. A lock file another user
    made may be read-only for us, which is enough for ``flock``."""
    try:
        return os.open(path, os.O_RDWR)
    except FileNotFoundError:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another job made it in between
            return _open_lock(path)
    except PermissionError:
        return os.open(path, os.O_RDONLY)


def _try_lock(path: Path) -> int | None:
    """An exclusive lock on ``path`` without waiting: the open descriptor, or None if held."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    with contextlib.suppress(OSError):  # the holder's pid, for the messages of waiting jobs
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holders(paths: list[Path]) -> str:
    def holder(path: Path) -> str:
        with contextlib.suppress(OSError):
            pid = path.read_text().strip()
            if pid:
                return f"{path} (pid {pid})"
        return str(path)

    return ", ".join(holder(path) for path in paths)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then restore them (unset if they were)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def claim_gpu(
    count: int = 1, *, timeout: float | None = None, poll: float = 1.0, lock_dir: str | os.PathLike | None = None
) -> Iterator[tuple[int, ...]]:
    """Claim ``count`` free GPUs of this machine for the block; yields their indices.

    Sets ``CUDA_VISIBLE_DEVICES`` to the claimed indices (and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``,
    so that index ``i`` is ``nvidia-smi``'s GPU ``i``) while the block runs; call it before
    anything initialises CUDA. Yields ``()`` and changes nothing when ``count`` is 0, when
    ``CUDA_VISIBLE_DEVICES`` is already set (SLURM's allocation is kept) or when the machine has
    no GPU (a warning; the job runs on the CPU). While fewer than ``count`` devices are free it
    waits, trying every ``poll`` seconds, holding none of them (no deadlock between jobs that
    each want several); after ``timeout`` seconds (None: no limit) it raises
    :class:`GpuBusyError` naming the lock files and their holders.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"claim_gpu: count must be a whole number of GPUs >= 0, not {count!r}")
    if count == 0:
        yield ()
        return
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        log.info("GPUs: keeping CUDA_VISIBLE_DEVICES=%s (set by the scheduler)", os.environ["CUDA_VISIBLE_DEVICES"])
        yield ()
        return
    available = visible_gpu_count()
    if available == 0:
        log.warning("GPUs: the job asks for %d but this machine has none; it runs on the CPU", count)
        yield ()
        return
    if count > available:
        raise ValueError(
            f"claim_gpu: the job asks for {count} GPUs but this machine has {available} "
            f"(nvidia-smi -L, or ${COUNT_ENV})"
        )
    paths = [lock_path(index, lock_dir) for index in range(available)]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    start, waiting = time.monotonic(), False
    while True:
        held: dict[int, int] = {}
        busy: list[Path] = []
        for index, path in enumerate(paths):
            fd = _try_lock(path)
            if fd is None:
                busy.append(path)
                continue
            held[index] = fd
            if len(held) == count:
                break
        if len(held) == count:
            break
        for fd in held.values():
            os.close(fd)
        if timeout is not None and time.monotonic() - start >= timeout:
            raise GpuBusyError(
                f"claim_gpu: {count} of the {available} GPUs did not become free within {timeout} s; "
                f"held by other jobs: {_holders(busy)}"
            )
        if not waiting:
            log.info("GPUs: waiting for %d of %d to be free (held: %s)", count, available, _holders(busy))
            waiting = True
        time.sleep(poll)
    devices = tuple(held)
    try:
        with _environment(CUDA_VISIBLE_DEVICES=",".join(map(str, devices)), CUDA_DEVICE_ORDER="PCI_BUS_ID"):
            log.info("GPUs: claimed %s (lock files in %s)", devices, paths[0].parent)
            yield devices
    finally:
        for fd in held.values():
            os.close(fd)
