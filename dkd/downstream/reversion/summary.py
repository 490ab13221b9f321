"""The reversion target's part of the report (paper 4.3, Fig. 6; F.2, Fig. 23): per relation a grid of
the teacher's images above the one-step student's (same prompts, same seeds), the time per image of
both beside the paper's time saving, and what each inversion and generation wrote.

Every number comes from a file of the target, passed in as the dict it holds: ``inversion.json``
(rule ``reversion_invert``), ``images.json`` (``reversion_generate``) and ``timing/<model>.json``
(``reversion_timing``); the field names are those of ``scripts/reversion_*.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...io import image_path
from ...report.downstream import Figure, Summary, Table
from ...report.grid import save_grid

PAPER_TIME_SAVING = 88.89  # %, paper 4.3: ReVersion with the DKD student vs. DDIM 50 (A40, batch 1, diffusers 0.25)
PAPER_FIGURES = "Fig. 6 and Fig. 23"
MODELS = ("teacher", "student")  # the grid's rows, top to bottom
NOT_APPLICABLE = "—"


def time_saving_percent(student_s: float, teacher_s: float) -> float:
    """``100 (1 - student / teacher)``: the share of the teacher's time per image the student saves."""
    values = (student_s, teacher_s)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"times must be finite numbers; got {values}.")
    if student_s < 0 or teacher_s <= 0:
        raise ValueError(f"need student >= 0 and teacher > 0 seconds; got {values}.")
    return 100.0 * (1.0 - student_s / teacher_s)


def grid_images(images: Mapping, columns: int) -> list[Path]:
    """The first ``columns`` image files of an ``images.json`` (its ``images`` folder and ``count``)."""
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an integer >= 1; got {columns!r}.")
    return [image_path(images["images"], k) for k in range(min(columns, images["count"]))]


def relation_grid(teacher: Mapping, student: Mapping, out: str | os.PathLike, *, columns: int = 8,
                  cell: int = 256) -> Path:  # fmt: skip
    """The grid of one relation: the teacher's first images in the top row, the student's of the same
    prompts and seeds below (as many as both have, at most ``columns``)."""
    if teacher["prompts"] != student["prompts"] or teacher["seeds"] != student["seeds"]:
        raise ValueError(f"{out}: the teacher's and the student's images differ in prompts or seeds.")
    top, bottom = grid_images(teacher, columns), grid_images(student, columns)
    width = min(len(top), len(bottom))
    if width == 0:
        raise ValueError(f"{out}: no images to put in the grid.")
    return save_grid(top[:width] + bottom[:width], out, columns=width, cell=cell)


def timing_table(timings: Mapping[str, Mapping]) -> Table:
    """Seconds per image of the teacher and the student (``timing/<model>.json``) and the time saving."""
    teacher, student = timings["teacher"], timings["student"]
    saving = time_saving_percent(student["seconds"], teacher["seconds"])
    rows = [
        ("SD teacher (ReVersion)", f"DDIM, CFG {teacher['guidance_scale']:g}", teacher["nfe"], teacher["seconds"],
         NOT_APPLICABLE, NOT_APPLICABLE),
        ("DKD one-step student", "one step, no CFG", student["nfe"], student["seconds"], saving, PAPER_TIME_SAVING),
    ]  # fmt: skip
    devices = sorted({t["device"] for t in (teacher, student)})
    note = (
        f"Batch 1, text encoder and VAE decoder included, median of {teacher['repeats']} calls after "
        f"{teacher['warmup']} warm-up on {', '.join(devices)} ({teacher['dtype']}), the token of "
        f"`{teacher['relation']}` loaded. The paper's {PAPER_TIME_SAVING}%: an A40, batch 1, diffusers 0.25. NFE: "
        "sampling steps; with CFG each teacher step runs the U-Net on a batch of two."
    )
    return Table(
        title="ReVersion: time per image, teacher vs. one-step student",
        columns=("model", "sampling", "NFE", "s / image", "time saving (%)", "paper (%)"),
        rows=rows,
        note=note,
        decimals=3,
    )


def relations_table(inversions: Mapping[str, Mapping], images: Mapping[str, Mapping[str, Mapping]]) -> Table:
    """Per relation: its exemplars, the inversion's steps, seconds and final cosine to the init word, and
    the images of each model (``inversion.json``, ``<relation>/<model>/images.json``)."""
    rows = []
    for relation, inversion in inversions.items():
        config = inversion["config"]
        rows.append((relation, inversion["images"], inversion["captions"], config["steps"],
                     inversion["seconds"], inversion["init_word_cosine"],
                     *(images[relation][model]["count"] for model in MODELS)))  # fmt: skip
    init = {inv["config"]["init_word"] for inv in inversions.values()}
    return Table(
        title="ReVersion: relation inversion against the teacher",
        columns=(
            "relation",
            "exemplar images",
            "captions",
            "steps",
            "inversion (s)",
            f"cos(<R>, {'/'.join(sorted(init))})",
            "teacher images",
            "student images",
        ),  # fmt: skip
        rows=rows,
        note="The relation token's learned embedding row, cosine to the row of the word it started from.",
        decimals=3,
    )


def reversion_summary(
    inversions: Mapping[str, Mapping],
    images: Mapping[str, Mapping[str, Mapping]],
    timings: Mapping[str, Mapping],
    grids: Mapping[str, str],
    *,
    words: Mapping[str, str],
    notes: Sequence[str] = (),
) -> Summary:
    """The target's :class:`~dkd.report.downstream.Summary`: the two tables and one grid per relation
    (``grids``: relation -> file relative to the summary; ``words``: relation -> its words)."""
    figures = []
    for relation, file in grids.items():
        teacher = images[relation]["teacher"]
        caption = (
            f"ReVersion, relation `{relation}` ({words[relation]}): the teacher, DDIM {teacher['nfe']} steps with "
            f"CFG {teacher['guidance_scale']:g} (top), and the one-step DKD student (bottom), both with the "
            f'relation token inverted against the teacher; same prompts and seeds, e.g. "{teacher["prompts"][0]}"'
        )
        figures.append(Figure(file=file, caption=caption, paper=PAPER_FIGURES))
    return Summary(
        target="reversion",
        title="ReVersion: relation inversion with the one-step student",
        paper=PAPER_FIGURES,
        tables=(timing_table(timings), relations_table(inversions, images)),
        figures=tuple(figures),
        notes=tuple(notes),
    )
