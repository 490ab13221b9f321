"""Fig. 2c/d: a one-step model given its teacher's norms, or its teacher's directions.

Section 1 of the paper replaces, in every analysed layer of DMD2, either the per-neuron norms or the
directions with the teacher's (``W = eta V``, Eq. 13): with the teacher's norms FID changes by +0.7,
with the teacher's directions by +241.3. :func:`replace_part` builds such a model's state dict;
:func:`swap_student` writes it as an exported student pipeline folder, :func:`swap_published` as the
denoiser of a published checkpoint (the models ``tnorm-<model>`` and ``tdir-<model>`` of the workflow),
sampled and scored like the one-step model itself.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .weights import analysed_layers, swap_norm_direction

PARTS = ("norms", "directions")


def replace_part(
    one_step: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], part: str, include_conv: bool = False
) -> dict[str, torch.Tensor]:
    """``one_step`` with the teacher's ``part`` ("norms" or "directions") in every analysed layer (Linear,
    and Conv2d with ``include_conv``); every other tensor, and the other part, stay the one-step model's.
    Each replaced weight keeps the one-step model's dtype."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}; got {part!r}.")
    layers = analysed_layers(teacher, one_step, include_conv)
    swapped = {}
    for name, weight in one_step.items():
        if name not in layers:
            swapped[name] = weight
        elif part == "norms":
            swapped[name] = swap_norm_direction(teacher[name], weight).to(weight.dtype)
        else:
            swapped[name] = swap_norm_direction(weight, teacher[name]).to(weight.dtype)
    return swapped


def swap_student(
    student: str | os.PathLike,
    teacher: str | os.PathLike,
    out: str | os.PathLike,
    *,
    part: str,
    include_conv: bool = False,
) -> Path:
    """Write the pipeline folder ``out``: the exported student ``student`` whose denoiser has the teacher's
    ``part`` (:func:`replace_part`; ``teacher`` is the teacher's folder or hub id), the rest copied,
    atomically; the student's ``dkd_student.json`` records the swap. Returns ``out``."""
    import diffusers

    from ..backbones import backbone_spec
    from ..io import atomic_folder
    from ..sampling.pipeline import STUDENT_INFO, student_info
    from .io import load_state_dict

    student = Path(student)
    info = student_info(student)
    if not info:
        raise FileNotFoundError(f"{student} is not an exported student pipeline (no {STUDENT_INFO}).")
    spec = backbone_spec(info["backbone"])
    model = getattr(diffusers, spec.denoiser_class).from_pretrained(student, subfolder=spec.denoiser_subfolder)
    state = replace_part(
        model.state_dict(), load_state_dict(teacher, spec.denoiser_subfolder), part, include_conv=include_conv
    )
    model.load_state_dict(state)
    with atomic_folder(out) as folder:
        shutil.copytree(student, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(spec.denoiser_subfolder))
        model.save_pretrained(folder / spec.denoiser_subfolder)
        swap = {"student": str(student), "teacher": str(teacher), "teacher_part": part, "include_conv": include_conv}
        (folder / STUDENT_INFO).write_text(json.dumps({**info, "swap": swap}, indent=2))
    return Path(out)


def swap_published(
    spec, teacher: str | os.PathLike, out: str | os.PathLike, *, backbone: str, part: str, include_conv: bool = False
) -> Path:
    """Write the denoiser folder ``out`` (config and safetensors, atomically): the denoiser a published
    checkpoint samples with (``spec``: its :class:`~dkd.sampling.specs.MultiStepSpec`, built as its sampler
    builds it: replaced U-Net, LoRA fused) with the teacher's ``part`` (:func:`replace_part`). Returns ``out``."""
    from ..backbones import backbone_spec
    from ..io import atomic_folder
    from ..sampling.samplers import DiffusersSampler
    from .io import load_state_dict

    if spec.adapter:  # the swapped model is sampled without the LoRA: it may change the denoiser only
        from diffusers.loaders import StableDiffusionLoraLoaderMixin

        lora = StableDiffusionLoraLoaderMixin.lora_state_dict(spec.adapter, weight_name=spec.adapter_weight_name)[0]
        if any(not key.startswith("unet.") for key in lora):
            raise ValueError(f"{spec.adapter}: the LoRA also changes the text encoder; only a denoiser LoRA is swapped")
    subfolder = backbone_spec(backbone).denoiser_subfolder
    model = getattr(DiffusersSampler(spec).pipe, subfolder)
    model.load_state_dict(
        replace_part(model.state_dict(), load_state_dict(teacher, subfolder), part, include_conv=include_conv)
    )
    with atomic_folder(out) as folder:
        model.save_pretrained(folder)
    return Path(out)
