"""The ScaleCrafter comparison of the workflow target ``scalecrafter`` (paper 4.3, Fig. 14/25): the
one-step student at resolutions above its own, without and with re-dilation (and FreeU), against the
re-dilated multi-step teacher; the same prompts and seeds in every arm.

* :data:`ARMS`: ``student`` (plain: the U-Net as trained, on the larger latent), ``student-redilated``,
  ``student-redilated-freeu`` and ``teacher-redilated`` (:class:`~dkd.downstream.scalecrafter.teacher.
  ScaleCrafterTeacher`);
* :func:`generate_arm`: one arm's images, its U-Net evaluations per image (counted by a forward hook on
  the U-Net while the images are made) and its seconds per image (:func:`dkd.metrics.timing.time_pipeline`:
  batch 1, text encoder and VAE included, the median of the timed calls);
* :func:`comparison_grid` (rows = arms) and :func:`comparison_rows` (the table of the summary).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from ...io import atomic_open, image_path
from .redilation import HighResSpec, one_step_high_res

GRID_CELL = 256  # grid row height in pixels
LABEL_WIDTH = 200  # the arm's name left of its row


@dataclass(frozen=True)
class Arm:
    """One row of the comparison: which model (``student``: one step; ``teacher``: multi-step with CFG)
    and whether it is re-dilated and uses FreeU."""

    name: str
    model: str
    redilate: bool
    freeu: bool


ARMS = {
    arm.name: arm
    for arm in (
        Arm("student", "student", False, False),
        Arm("student-redilated", "student", True, False),
        Arm("student-redilated-freeu", "student", True, True),
        Arm("teacher-redilated", "teacher", True, False),
    )
}


def arm(name: str) -> Arm:
    if name not in ARMS:
        raise ValueError(f"unknown ScaleCrafter arm {name!r}; one of {list(ARMS)}.")
    return ARMS[name]


def parse_resolution(text: str) -> tuple[int, int]:
    """``"<height>x<width>"`` -> ``(height, width)``."""
    height, sep, width = text.partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise ValueError(f"a resolution is <height>x<width>, e.g. 1024x1024; got {text!r}.")
    return int(height), int(width)


class HighResStudent:
    """The one-step student at ``spec``: a ``(prompts, seeds) -> PIL images`` sampler
    (:func:`~dkd.downstream.scalecrafter.redilation.one_step_high_res`) that the timing harness can call."""

    def __init__(self, pipe, spec: HighResSpec):
        self.pipe, self.spec, self.teacher = pipe, spec, pipe.teacher

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 4):
        return one_step_high_res(self.pipe, prompts, seeds, self.spec, batch_size=batch_size)


def arm_sampler(
    name: str,
    resolution: str,
    *,
    source: str,
    backbone: str,
    schedule: Mapping | None = None,
    teacher: Mapping | None = None,
    freeu: Mapping[str, float] | None = None,
    dtype=None,
    device="cpu",
):
    """``(sampler, spec, steps)`` of arm ``name`` at ``resolution`` (``"<height>x<width>"``): a student arm
    loads the exported student pipeline at ``source`` (:class:`HighResStudent`, 1 step); the teacher arm
    the teacher ``backbone`` at ``source`` (:class:`~dkd.downstream.scalecrafter.teacher.ScaleCrafterTeacher`)
    with ``teacher`` (``steps``, ``guidance_scale``, ``eta``, ``freeu``) and ``schedule`` (``dilate_tau``,
    ``ndcfg_tau``, ``progressive``). ``freeu``: FreeU's factors for the arms that use FreeU."""
    import torch

    from ...backbones import load_teacher
    from ...sampling import OneStepPipeline
    from .teacher import ReDilationSchedule, ScaleCrafterTeacher

    chosen, (height, width) = arm(name), parse_resolution(resolution)
    dtype = torch.float32 if dtype is None else dtype
    if chosen.model == "teacher" and not teacher:
        raise ValueError("the teacher arm needs the teacher's settings (steps, guidance_scale, eta).")
    use_freeu = chosen.freeu if chosen.model == "student" else bool(teacher.get("freeu", False))
    if use_freeu and not freeu:
        raise ValueError(f"arm {name!r} uses FreeU: give FreeU's factors (b1, b2, s1, s2).")
    spec = HighResSpec(height, width, chosen.redilate, use_freeu, dict(freeu) if use_freeu else None)
    if chosen.model == "student":
        return HighResStudent(OneStepPipeline.from_pretrained(source, dtype=dtype, device=device), spec), spec, 1
    schedule = dict(schedule or {})  # a resolution of the config: its height and width are not the schedule's
    plan = ReDilationSchedule(
        schedule.get("dilate_tau", 0), schedule.get("ndcfg_tau", 0), schedule.get("progressive", False)
    )
    settings = {k: teacher[k] for k in ("steps", "guidance_scale", "eta")}
    model = load_teacher(backbone, source, dtype=dtype, device=device)
    return ScaleCrafterTeacher(model, spec, plan, **settings), spec, settings["steps"]


@contextlib.contextmanager
def unet_rows(unet) -> Iterator[list[int]]:
    """``[rows]``: the samples that go through ``unet`` inside the context (its forward calls' batch sizes
    summed), counted by a forward pre-hook that is removed on exit."""
    count = [0]

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        count[0] += sample.shape[0]

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()


def generate_arm(
    sampler,
    prompts: Sequence[str],
    seeds: Sequence[int],
    folder: str | os.PathLike,
    *,
    batch_size: int,
    timing: Mapping[str, int],
) -> dict:
    """Write ``sampler``'s image of every (prompt, seed) pair (prompt-major) as ``<folder>/<i:05d>.png``;
    return ``{"images": [{file, prompt, seed}], "unet_evaluations_per_image", "seconds_per_image",
    "timing"}``, the U-Net evaluations counted while the images are made, the seconds timed afterwards
    (``timing``: ``warmup``, ``repeats``; prompt and seed of the first image)."""
    from ...metrics.timing import time_pipeline

    pairs = [(p, s) for p in prompts for s in seeds]
    if not pairs:
        raise ValueError("generate_arm needs at least one prompt and one seed.")
    with unet_rows(sampler.teacher.denoiser) as rows:
        images = sampler([p for p, _ in pairs], [s for _, s in pairs], batch_size=batch_size)
    records = []
    for i, (image, (prompt, seed)) in enumerate(zip(images, pairs, strict=True)):
        path = image_path(folder, i)
        image.save(path)
        records.append({"file": path.name, "prompt": prompt, "seed": seed, "size": list(image.size)})
    timed = time_pipeline(sampler, pairs[0][0], seed=pairs[0][1], progress=True, **timing)
    per_image = rows[0] / len(pairs)
    return {
        "images": records,
        "unet_evaluations_per_image": int(per_image) if per_image.is_integer() else per_image,
        "seconds_per_image": timed.pop("median_s"),
        "timing": timed,
    }


def _label(text: str, height: int) -> Image.Image:
    strip = Image.new("RGB", (LABEL_WIDTH, height), "white")
    ImageDraw.Draw(strip).text((8, height // 2), text, fill="black", anchor="lm")
    return strip


def comparison_grid(rows: Sequence[tuple[str, Sequence[str | os.PathLike]]], out: str | os.PathLike) -> Path:
    """A PNG grid, one row per ``(label, image paths)``: the label, then the images scaled to
    :data:`GRID_CELL` pixels high (aspect kept; nearest neighbour when enlarging). Written atomically."""
    if not rows or any(not paths for _, paths in rows):
        raise ValueError("comparison_grid needs rows with at least one image each.")
    cells = []
    for label, paths in rows:
        row = [_label(label, GRID_CELL)]
        for path in paths:
            with Image.open(path) as image:
                width = max(1, round(image.width * GRID_CELL / image.height))
                resample = Image.NEAREST if image.height < GRID_CELL else Image.LANCZOS
                row.append(image.convert("RGB").resize((width, GRID_CELL), resample))
        cells.append(row)
    grid = Image.new("RGB", (max(sum(c.width for c in row) for row in cells), GRID_CELL * len(cells)), "white")
    for r, row in enumerate(cells):
        x = 0
        for cell in row:
            grid.paste(cell, (x, r * GRID_CELL))
            x += cell.width
    with atomic_open(out, "wb") as handle:
        grid.save(handle, format="PNG")
    return Path(out)


COLUMNS = ("resolution", "arm", "steps", "U-Net evaluations / image", "seconds / image")
SAVING = "time saving vs teacher (%)"


def comparison_rows(records: Sequence[Mapping]) -> tuple[tuple[str, ...], list[list]]:
    """The table of the summary from the arms' ``images.json`` records (in the given order): the
    columns :data:`COLUMNS`, plus :data:`SAVING` (``100 (1 - s / s_teacher)`` at the same resolution, the
    paper's time-saving measure) when every resolution has a ``teacher-redilated`` record."""
    teacher = {r["resolution"]: r["seconds_per_image"] for r in records if r["arm"] == "teacher-redilated"}
    saving = bool(records) and all(r["resolution"] in teacher for r in records)
    rows = []
    for r in records:
        row = [r["resolution"], r["arm"], r["steps"], r["unet_evaluations_per_image"], r["seconds_per_image"]]
        if saving:
            row.append(100.0 * (1.0 - r["seconds_per_image"] / teacher[r["resolution"]]))
        rows.append(row)
    return COLUMNS + ((SAVING,) if saving else ()), rows


def write_comparison(
    arm_files: Sequence[str | os.PathLike],
    grids: Sequence[str | os.PathLike],
    table: str | os.PathLike,
    summary: str | os.PathLike,
    *,
    backbone: str,
    student: str,
) -> Path:
    """The target's last files from the arms' ``images.json`` (``arm_files``, resolution-major, arms in
    row order; the images beside them in ``images/``): one grid per resolution (``grids``, in the order the
    resolutions first appear), ``table`` (CSV of :func:`comparison_rows`) and ``summary``
    (:mod:`dkd.report.downstream`), every number read back from the records."""
    import csv
    import io
    import json

    from ...io import atomic_write_text
    from ...report.downstream import Figure, Summary, Table, write_summary

    records = [json.loads(Path(f).read_text()) | {"folder": Path(f).parent} for f in arm_files]
    resolutions = list(dict.fromkeys(r["resolution"] for r in records))
    if len(resolutions) != len(grids):
        raise ValueError(f"{len(resolutions)} resolutions ({resolutions}) but {len(grids)} grid files.")
    figures = []
    for resolution, grid in zip(resolutions, grids):
        rows = [r for r in records if r["resolution"] == resolution]
        comparison_grid([(r["arm"], [r["folder"] / "images" / i["file"] for i in r["images"]]) for r in rows], grid)
        pairs, prompts = rows[0]["images"], len({i["prompt"] for i in rows[0]["images"]})
        arms = ", ".join(r["arm"] for r in rows)
        caption = f"ScaleCrafter at {resolution}: rows {arms}; {len(pairs)} columns, {prompts} prompts x seeds"
        figures.append(
            Figure(file=os.path.relpath(grid, Path(summary).parent), caption=caption, paper="Fig. 14 and Fig. 25")
        )
    columns, rows = comparison_rows(records)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([columns, *rows])
    atomic_write_text(table, text.getvalue())
    timing = records[0]["timing"]
    notes = [
        f"Student: {student} ({backbone}), one step at t = 999; re-dilated: ScaleCrafter's dilation of the U-Net's "
        "resnet and resampler convs below the outermost level, factor min(1 + depth, upscaling).",
        f"Seconds per image: batch 1, text encoder and VAE decoder included, the median of {timing['repeats']} calls "
        f"on {timing['device']}. The paper shows pictures only for ScaleCrafter (no number, no prompt list).",
    ]
    teacher = next((r["teacher"] for r in records if r["arm"] == "teacher-redilated"), None)
    if teacher is not None:
        notes.append(
            f"Teacher: DDIM {teacher['steps']} steps, CFG {teacher['guidance_scale']}, eta {teacher['eta']}, "
            "re-dilated in its first dilate_tau steps (with the progressive decay and noise-damped CFG where "
            "configured), as ScaleCrafter samples SD1.5."
        )
    note = "U-Net evaluations counted while the images were made (CFG: 2 per step, noise-damped CFG: 1 more)."
    return write_summary(
        summary,
        Summary(
            target="scalecrafter",
            title="ScaleCrafter: the one-step student at high resolution",
            paper="Fig. 14 and Fig. 25",
            tables=[Table(title="ScaleCrafter: cost per image", columns=columns, rows=rows, note=note)],
            figures=figures,
            notes=notes,
        ),
    )
