"""DreamBooth's arms sampled and scored (paper F.2, Fig. 7/24): the evaluation side of the dreambooth target.

An arm is a method fine-tuned on a base model: ``lorad``, ``lora`` or ``ft`` on the teacher, sampled with the
multi-step sampler (the paper: DDIM, 50 steps), or ``dkd-<method>``, the same fine-tuning of the exported
DKD student's U-Net, sampled in one step as the student is (:class:`~dkd.sampling.pipeline.OneStepPipeline`
at its ``t_init``).

* :func:`generate_class_images`: the prior-preservation images of a class, sampled once from the teacher
  with the class prompt and shared by every arm.
* :func:`sample_arm`: ``images_per_prompt`` images of each evaluation prompt, image ``i`` from seed
  ``seed + i`` (the same seeds for every arm).
* :func:`score_arm`: DINO, CLIP-I (against the subject's photos) and CLIP-T (against each prompt without
  the identifier): ``dkd.metrics.subject``.
* :func:`arm_table`, :func:`arm_grid`: the summary's table (mean over subjects) and a subject's grid.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...backbones import Teacher
from ...io import image_path
from ...report.downstream import Table
from ...report.grid import save_grid
from ...sampling.pipeline import MultiStepPipeline, OneStepPipeline
from .method import METHODS

STUDENT_PREFIX = "dkd-"  # the arm of the DKD student fine-tuned with a method: dkd-lorad
METRICS = ("dino", "clip_i", "clip_t")
METRIC_NAMES = {"dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T"}


def parse_arm(arm: str) -> tuple[str, str]:
    """``(base, method)`` of an arm: ``("teacher", m)`` for ``m``, ``("student", m)`` for ``dkd-m``."""
    base, method = ("student", arm[len(STUDENT_PREFIX) :]) if arm.startswith(STUDENT_PREFIX) else ("teacher", arm)
    if method not in METHODS:
        raise ValueError(f"unknown DreamBooth arm {arm!r}: one of {METHODS} or {STUDENT_PREFIX}<method>.")
    return base, method


def _sample(sampler, prompts: Sequence[str], seeds: Sequence[int], folder, batch_size: int) -> list[Path]:
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="sample"):
        images = sampler(prompts[start : start + batch_size], seeds[start : start + batch_size], batch_size)
        for offset, image in enumerate(images):
            image.save(image_path(folder, start + offset))
            paths.append(image_path(folder, start + offset))
    return paths


def multi_step_sampler(base: Teacher, sampling: Mapping) -> MultiStepPipeline:
    """The teacher arms' sampler: ``sampling`` holds ``steps``, ``guidance_scale`` and ``scheduler``."""
    return MultiStepPipeline(base, **dict(sampling))


def one_step_sampler(base: Teacher, info: Mapping) -> OneStepPipeline:
    """The student arms' sampler, with the generator input of the student's ``dkd_student.json`` (``info``)."""
    return OneStepPipeline(base, t_init=info.get("t_init", 999), scaled_input=info.get("scaled_input", False))


def generate_class_images(
    base: Teacher, prompt: str, count: int, folder, *, sampling: Mapping, seed: int = 0, batch_size: int = 4
) -> list[Path]:
    """``count`` images of the class ``prompt`` from the teacher's multi-step sampler, image ``i`` from seed
    ``seed + i``, as ``<folder>/<i:05d>.png``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1; got {count!r}.")
    sampler = multi_step_sampler(base, sampling)
    return _sample(sampler, [prompt] * count, [seed + i for i in range(count)], folder, batch_size)


def sample_arm(
    sampler, prompts: Sequence[tuple[str, str]], folder, *, images_per_prompt: int, seed: int = 0, batch_size: int = 4
) -> list[dict]:
    """``images_per_prompt`` images of each ``(prompt, scored text)``: image ``i = p * images_per_prompt + k``
    (prompt ``p``, ``k``-th image) from seed ``seed + i``, as ``<folder>/<i:05d>.png``. Returns one record per
    image: ``file`` (its name), ``prompt``, ``text`` and ``seed``."""
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be an integer >= 1; got {images_per_prompt!r}.")
    pairs = [pair for pair in prompts for _ in range(images_per_prompt)]
    seeds = [seed + i for i in range(len(pairs))]
    paths = _sample(sampler, [p for p, _ in pairs], seeds, folder, batch_size)
    return [{"file": path.name, "prompt": p, "text": t, "seed": s} for path, (p, t), s in zip(paths, pairs, seeds)]


def score_arm(
    images: Sequence[str | os.PathLike], texts: Sequence[str], photos: Sequence[str | os.PathLike], *, dino, clip,
    batch_size: int = 32,
) -> dict:  # fmt: skip
    """DINO and CLIP-I of the ``images`` against the subject's ``photos`` (mean pairwise cosine) and CLIP-T
    of image ``i`` against ``texts[i]``; ``dino`` and ``clip``: ``(model, processor)`` pairs
    (``dkd.metrics.subject.load_dino`` / ``load_subject_clip``)."""
    from ...metrics.subject import clip_image_similarity, clip_text_similarity, dino_similarity

    images, photos = list(images), list(photos)
    return {
        "dino": dino_similarity(images, photos, model=dino[0], processor=dino[1], batch_size=batch_size),
        "clip_i": clip_image_similarity(images, photos, model=clip[0], processor=clip[1], batch_size=batch_size),
        "clip_t": clip_text_similarity(images, list(texts), model=clip[0], processor=clip[1], batch_size=batch_size),
        "images": len(images),
        "photos": len(photos),
    }


def arm_table(arms: Sequence[str], subjects: Sequence[str], metrics: Mapping, trainable: Mapping) -> Table:
    """The summary's table: per arm, its base model and sampler, its trainable parameters
    (``trainable[arm]``) and each metric's mean over the ``subjects`` (``metrics[(subject, arm)]``: the
    values of a metrics file)."""
    rows = []
    for arm in arms:
        base, method = parse_arm(arm)
        sampler = "one step" if base == "student" else "multi-step"
        means = [float(np.mean([metrics[(s, arm)][m] for s in subjects])) for m in METRICS]
        rows.append((arm, "DKD student" if base == "student" else "teacher", method, sampler, trainable[arm], *means))
    note = (
        f"Mean over {len(subjects)} subject(s) ({', '.join(subjects)}). DINO, CLIP-I: mean pairwise cosine "
        "between generated images and the subject's photos; CLIP-T: cosine between each image and its prompt "
        "without the identifier (DreamBooth's metrics; the paper reports none)."
    )
    columns = ("Arm", "Base", "Method", "Sampler", "Trainable params", *(METRIC_NAMES[m] for m in METRICS))
    return Table(title="DreamBooth arms: subject fidelity and prompt fidelity", columns=columns, rows=rows, note=note)


def arm_grid(
    photo: str | os.PathLike, rows: Mapping[str, Sequence[str | os.PathLike]], out, *, cell: int = 128
) -> Path:
    """A grid of one subject: per arm (a row, in ``rows``' order) one of the subject's photos, then the arm's
    images (the same prompts and seeds in every row)."""
    lengths = {len(images) for images in rows.values()}
    if len(lengths) != 1 or not lengths.pop():
        raise ValueError("every arm of the grid needs the same, non-zero number of images.")
    paths = [p for images in rows.values() for p in [photo, *images]]
    return save_grid(paths, out, columns=1 + len(next(iter(rows.values()))), cell=cell)


def read_json(path: str | os.PathLike) -> dict:
    data = json.loads(Path(path).read_text())
    values = data.get("values", {})
    bad = [k for k in METRICS if k in values and not math.isfinite(values[k])]
    if bad:
        raise ValueError(f"{path}: non-finite {bad}.")
    return data


def load_arm_sampler(
    backbone: str, source: str, arm_folder, *, one_step: bool, sampling: Mapping, dtype=None, device="cpu"
):
    """The sampler of an arm: its base (the teacher, or the student's exported pipeline ``source``) loaded on
    the CPU, the arm's weights loaded into its U-Net (``dkd.downstream.dreambooth.train.load_arm``), moved to
    ``device``; then the student's one-step sampler (its ``dkd_student.json``) or the multi-step one
    (``sampling``)."""
    import torch

    from ...backbones import load_teacher
    from ...sampling.pipeline import student_info
    from .train import load_arm

    base = load_arm(load_teacher(backbone, source, dtype=dtype or torch.float32, device="cpu"), arm_folder)
    for module in (base.denoiser, base.text_encoder, base.vae):
        module.to(device)
    return one_step_sampler(base, student_info(source)) if one_step else multi_step_sampler(base, sampling)


def _settings_table(arms: Sequence[str], configs: Mapping) -> Table:
    rows = []
    for arm in arms:
        config = configs[arm]
        rank = "-" if config["method"] == "ft" else config["rank"]
        rows.append((arm, rank, config["lr"], config["steps"], config["prior_weight"], config["class_images"]))
    return Table(
        title="DreamBooth arms: training settings",
        columns=("Arm", "Rank", "Learning rate", "Steps", "Prior weight", "Class images"),
        rows=rows,
        note="Adam (no weight decay), constant learning rate, prior-preservation loss (paper F.2).",
        decimals=6,
    )


def write_dreambooth_summary(
    out, *, subjects: Sequence[str], arms: Sequence[str], metric_files, arm_files, image_files, photo_files,
    grid_prompts: int, images_per_prompt: int,
) -> Path:  # fmt: skip
    """The target's ``summary.json`` and a grid per subject (``grid-<subject>.png`` beside it), from the files
    of every (subject, arm) in subject-major order: ``metrics.json``, the exported ``dreambooth.json``,
    ``images.json``; and each subject's ``photos.json``."""
    from ...report.downstream import Figure, Summary, write_summary
    from .train import read_arm

    cells = [(subject, arm) for subject in subjects for arm in arms]
    metrics = {cell: read_json(path)["values"] for cell, path in zip(cells, metric_files)}
    trainable, configs = {}, {}
    for (_, arm), path in zip(cells, arm_files):
        record = read_arm(Path(path).parent)
        if trainable.setdefault(arm, record["trainable_parameters"]) != record["trainable_parameters"]:
            raise ValueError(f"arm {arm!r} trains different parameter counts for different subjects.")
        configs.setdefault(arm, record["config"])
    figures = []
    for subject, photo_file in zip(subjects, photo_files):
        photo = Path(photo_file).parent / "photos" / read_json(photo_file)["photos"][0]
        rows = {}
        for arm in arms:
            path = Path(image_files[cells.index((subject, arm))])
            records = read_json(path)["images"][::images_per_prompt][:grid_prompts]  # each prompt's first image
            rows[arm] = [path.parent / "images" / r["file"] for r in records]
        arm_grid(photo, rows, Path(out).parent / f"grid-{subject}.png")
        caption = f"Subject {subject}: a photo, then one image per prompt; rows: {', '.join(arms)}"
        figures.append(Figure(file=f"grid-{subject}.png", caption=caption, paper="Fig. 7"))
    notes = [
        "The paper shows pictures only (Figs. 7 and 24); DINO, CLIP-I and CLIP-T are DreamBooth's metrics "
        "(Ruiz et al., 2023) on its evaluation prompts, with the same seeds in every arm.",
        f"Arms {STUDENT_PREFIX}<method>: the DKD student's U-Net fine-tuned with the same DreamBooth loss and "
        "sampled in one step (not in the paper); the other arms fine-tune the teacher, sampled multi-step.",
    ]
    summary = Summary(
        target="dreambooth",
        title="DreamBooth with LoRaD, LoRA and full fine-tuning",
        paper="Fig. 7 and Fig. 24",
        tables=[arm_table(arms, subjects, metrics, trainable), _settings_table(arms, configs)],
        figures=figures,
        notes=notes,
    )
    return write_summary(out, summary)
