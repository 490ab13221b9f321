"""The ``controlnet`` target's summary (``dkd.report.downstream``): one table of per-part times, the
time saving and the canny F1 per control and model, read back from the files the target wrote, and one
grid per control (condition | teacher | student, a row per prompt and seed)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ...report.downstream import Figure, Summary, Table, write_summary
from ...report.grid import save_grid
from .pipeline import PARTS, time_saving
from .run import read_images

PAPER_SAVING = 86.26  # % of the multi-step ControlNet's time (paper 4.3; A40, batch 1, text encoder and VAE included)
PAPER_FIGURES = "Fig. 5 and Fig. 22"  # the paper's ControlNet figures (4.3; appendix G.5)
COLUMNS = ("control", "model", "NFE", "text encoder s", "U-Net + ControlNet s", "VAE s", "total s", "saving %",
           "paper saving %", "canny F1")  # fmt: skip
NONE = "—"


def _read(path) -> dict:
    return json.loads(Path(path).read_text())


def model_label(timing: Mapping) -> str:
    """How a row names its model, from its timing file's call settings."""
    call = timing["call"]
    if timing["model"] == "teacher":
        return f"teacher, DDIM {call['num_inference_steps']} steps, CFG {call['guidance_scale']:g}"
    return f"DKD student, {call['num_inference_steps']} step at t = {call['timesteps'][0]}, no CFG"


def summary_rows(files: Mapping[str, Mapping[str, Mapping[str, str]]]) -> list[tuple]:
    """The table's rows from ``{control: {model: {"timing": path, "f1": path or absent}}}`` (teacher and
    student; other keys are ignored): median seconds per part and in total, the student's time saving
    against the teacher of its control."""
    rows = []
    for control, models in files.items():
        timings = {model: _read(models[model]["timing"]) for model in ("teacher", "student")}
        for model in ("teacher", "student"):
            timing = timings[model]
            parts = [timing["parts"][part]["median_s"] for part in PARTS]
            total = timing["parts"]["total"]["median_s"]
            saving = NONE
            if model == "student":
                saving = 100 * time_saving(total, timings["teacher"]["parts"]["total"]["median_s"])
            f1 = _read(models[model]["f1"])["mean"] if models[model].get("f1") else NONE
            rows.append((control, model_label(timing), timing["nfe"], *parts, total, saving,
                         PAPER_SAVING if model == "student" else NONE, f1))  # fmt: skip
    return rows


def grid_paths(condition, teacher_marker, student_marker) -> list[Path]:
    """Row-major cells of a control's grid: per image of the teacher (prompt x seed), the condition,
    the teacher's image and the student's of the same prompt and seed."""
    teacher_folder, teacher = read_images(teacher_marker)
    student_folder, student = read_images(student_marker)
    if [(r["prompt"], r["seed"]) for r in teacher] != [(r["prompt"], r["seed"]) for r in student]:
        raise ValueError(f"{teacher_marker} and {student_marker} hold different prompts or seeds.")
    cells = []
    for a, b in zip(teacher, student):
        cells += [Path(condition), teacher_folder / a["file"], student_folder / b["file"]]
    return cells


def write_controlnet_summary(out, files: Mapping, grids: Mapping[str, str], *, cell: int = 256) -> Summary:
    """Write the grids (``grids``: control -> grid file beside ``out``; ``files[control]`` also has
    ``condition`` and per model ``images``) and ``out``, the target's summary."""
    figures = []
    for control, grid in grids.items():
        entry = files[control]
        save_grid(grid_paths(entry["condition"], entry["teacher"]["images"], entry["student"]["images"]), grid,
                  columns=3, cell=cell)  # fmt: skip
        caption = (f"ControlNet ({control}): condition | teacher, DDIM | DKD student, one step; a row per prompt "
                   "and seed, the same starting noise in a row")  # fmt: skip
        figures.append(Figure(file=Path(grid).name, caption=caption, paper=PAPER_FIGURES))
    rows = summary_rows(files)
    first = _read(next(iter(files.values()))["student"]["timing"])
    total = first["parts"]["total"]
    notes = [
        f"Timing: median seconds of {total['repeats']} calls after {total['warmup']} warm-up at batch 1 (prompt "
        f"in, PIL image out) on {total['device']} ({first['dtype']}, diffusers {first['diffusers']}); the total "
        "includes the text encoder and the VAE, its rest is the scheduler and pre- and post-processing. The "
        f"paper's {PAPER_SAVING}% is on an A40 at batch 1 with diffusers 0.25, text encoder and VAE included.",
        "NFE: U-Net + ControlNet calls per image (with CFG > 1, each on the doubled batch).",
    ]
    f1_files = [e[m]["f1"] for e in files.values() for m in ("teacher", "student") if e[m].get("f1")]
    if f1_files:
        tolerance = _read(f1_files[0])["tolerance"]
        within = f"within {tolerance} pixels" if tolerance else "per pixel"
        notes.append("Canny F1: the F1 of each output's canny edges (the control's thresholds) against the "
                     f"condition's edges, {within}, the mean over prompts and seeds.")  # fmt: skip
    summary = Summary(
        target="controlnet",
        title="ControlNet with the one-step student",
        paper=PAPER_FIGURES,
        tables=[Table(title="ControlNet: time per image and controllability", columns=COLUMNS, rows=rows)],
        figures=figures,
        notes=notes,
    )
    write_summary(out, summary)
    return summary
