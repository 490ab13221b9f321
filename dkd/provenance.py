"""Where a result comes from: the software and the device that computed it, and digests of the weights
it used, so that two reports can be compared line by line (``write_result`` adds :func:`environment` to
every result file; the rules add the weights' :func:`weights_sha256`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl")


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def environment() -> dict:
    """The versions of Python, torch and diffusers, the device (the CUDA GPU's name when one is visible,
    else the CPU's model) and torch's CPU kernel level (``torch.backends.cpu.get_cpu_capability()``:
    the instruction set the CPU kernels were chosen for, e.g. AVX2 or AVX512)."""
    import diffusers
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """The sha256 of one file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(source: str | os.PathLike | None) -> str | None:
    """One sha256 of a model's weights: of the file itself, or, for a folder, of the names and bytes of
    every weight file under it (``*.safetensors``, ``.bin``, ``.pt``, ``.pth``, ``.pkl``) in sorted
    order, configs excluded; None for a source that is no local path (a hub id) or holds no weights."""
    if source is None:
        return None
    path = Path(source)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()
