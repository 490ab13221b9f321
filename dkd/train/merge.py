"""The weight merge of two trained students (SwiftBrush v2, Dao et al. 2024, Eq. 6).

``theta = weight * theta_A + (1 - weight) * theta_B`` over every weight of the two students' denoisers,
after each student's adapter is folded into its base weights: the exported pipelines
(``dkd.train.export``) hold exactly those merged denoisers, so the merge reads two exported
``pipeline/`` folders and writes a third, whose other components (text encoder, VAE, scheduler) are the
first's. :func:`merge_weights` is the math, apart from the I/O.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

GENERATOR_INPUT = ("backbone", "t_init", "scaled_input", "prediction_type")  # must agree between the two


def merge_weights(
    first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """``weight * first + (1 - weight) * second`` per tensor, computed in float64 and returned in the
    first's dtypes; the two must have the same names and shapes (one clear error otherwise)."""
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1]; got {weight!r}.")
    if first.keys() != second.keys():
        only = sorted(set(first) ^ set(second))[:5]
        raise ValueError(f"the two students have different weights (e.g. {only}): not one architecture.")
    merged = {}
    for name, a in first.items():
        b = second[name]
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ.")
        if not a.is_floating_point():
            if not torch.equal(a, b):
                raise ValueError(f"{name}: a non-float tensor differs between the two students.")
            merged[name] = a.clone()
            continue
        merged[name] = (weight * a.double() + (1 - weight) * b.double()).to(a.dtype)
    return merged


def _stored_dtype(folder: Path) -> torch.dtype:
    """The dtype the denoiser folder stores its weights in (the export keeps the teacher's)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return torch.float32
    with safe_open(str(files[0]), "pt") as handle:
        return handle.get_tensor(next(iter(handle.keys()))).dtype


def _info(folder: Path) -> dict:
    from ..sampling.pipeline import STUDENT_INFO, student_info

    info = student_info(folder)
    if not info:
        raise FileNotFoundError(f"{folder} is not an exported student pipeline (no {STUDENT_INFO}).")
    return info


def merge_students(
    first: str | os.PathLike, second: str | os.PathLike, out: str | os.PathLike, *, weight: float = 0.5
) -> Path:
    """Write the pipeline folder ``out`` whose denoiser is :func:`merge_weights` of the denoisers of the
    exported student pipelines ``first`` and ``second`` (the rest copied from ``first``), atomically;
    returns ``out``. The two must be students of one backbone with one generator input."""
    import diffusers

    from ..backbones import backbone_spec
    from ..io import atomic_folder
    from ..sampling.pipeline import STUDENT_INFO

    first, second = Path(first), Path(second)
    infos = _info(first), _info(second)
    differ = [key for key in GENERATOR_INPUT if infos[0].get(key) != infos[1].get(key)]
    if differ:
        raise ValueError(f"{first} and {second} differ in {differ}: they cannot be merged into one student.")
    spec = backbone_spec(infos[0]["backbone"])
    cls = getattr(diffusers, spec.denoiser_class)
    dtype = _stored_dtype(first / spec.denoiser_subfolder)  # merged in float64, stored as the first stores it
    models = [cls.from_pretrained(f, subfolder=spec.denoiser_subfolder, torch_dtype=dtype) for f in (first, second)]
    models[0].load_state_dict(merge_weights(models[0].state_dict(), models[1].state_dict(), weight))
    with atomic_folder(out) as folder:
        shutil.copytree(first, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(spec.denoiser_subfolder))
        models[0].save_pretrained(folder / spec.denoiser_subfolder)
        info = {**infos[0], "merged": {"first": str(first), "second": str(second), "weight": weight}}
        (folder / STUDENT_INFO).write_text(json.dumps(info, indent=2))
    return Path(out)
