"""The reversion target's summary (dkd.downstream.reversion.summary): the time saving against a hand
computation (the paper's 88.89% is 1 - 1/9), the grid's layout from its pixels, and tables whose cells are
the numbers of the files they are given."""

from __future__ import annotations

import pytest
from PIL import Image

from dkd.downstream.reversion.summary import (
    PAPER_TIME_SAVING,
    relation_grid,
    relations_table,
    reversion_summary,
    time_saving_percent,
    timing_table,
)
from dkd.io import image_path
from dkd.report.downstream import read_summary, render_section, write_summary


def test_time_saving_percent():
    assert time_saving_percent(1.0, 9.0) == pytest.approx(100 * 8 / 9)  # a ninth of the time
    assert round(time_saving_percent(1.0, 9.0), 2) == PAPER_TIME_SAVING
    assert time_saving_percent(0.0, 2.0) == 100.0 and time_saving_percent(3.0, 2.0) == pytest.approx(-50.0)
    for bad in [(1.0, 0.0), (-1.0, 2.0), (float("nan"), 1.0), (True, 2.0), ("1", 2.0)]:
        with pytest.raises(ValueError):
            time_saving_percent(*bad)


def _images(folder, colours, prompts=None):
    folder.mkdir(parents=True)
    for k, colour in enumerate(colours):
        Image.new("RGB", (4, 4), colour).save(image_path(folder, k))
    prompts = prompts or [f"p{k // 2} <R>" for k in range(len(colours))]
    return {"images": str(folder), "count": len(colours), "prompts": prompts, "seeds": list(range(len(colours))),
            "nfe": 1, "guidance_scale": 1.0}  # fmt: skip


def test_relation_grid_puts_the_teacher_above_the_student(tmp_path):
    teacher = _images(tmp_path / "t", [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    student = _images(tmp_path / "s", [(10, 10, 10), (200, 200, 200), (90, 0, 90)])
    grid = Image.open(relation_grid(teacher, student, tmp_path / "g.png", columns=2, cell=8))
    assert grid.size == (16, 16)
    assert [grid.getpixel((x, y)) for y in (3, 12) for x in (3, 12)] == [
        (255, 0, 0), (0, 255, 0), (10, 10, 10), (200, 200, 200)]  # fmt: skip
    wide = Image.open(relation_grid(teacher, student, tmp_path / "w.png", columns=8, cell=8))
    assert wide.size == (24, 16)  # as many columns as images
    other = _images(tmp_path / "o", [(0, 0, 0)] * 3, prompts=["x <R>"] * 3)
    with pytest.raises(ValueError, match="prompts or seeds"):
        relation_grid(teacher, other, tmp_path / "x.png")
    with pytest.raises(ValueError):
        relation_grid(teacher, student, tmp_path / "x.png", columns=0)


TIMINGS = {
    model: {"seconds": seconds, "nfe": nfe, "guidance_scale": cfg, "device": "NVIDIA A40", "repeats": 20,
            "warmup": 3, "dtype": "bfloat16", "relation": "hug"}
    for model, seconds, nfe, cfg in [("teacher", 4.5, 50, 7.5), ("student", 0.5, 1, 1.0)]
}  # fmt: skip
INVERSIONS = {
    "hug": {"images": 6, "captions": 18, "seconds": 3600.5, "init_word_cosine": 0.42,
            "config": {"steps": 3000, "init_word": "and"}},
    "on": {"images": 4, "captions": 8, "seconds": 2.5, "init_word_cosine": 0.9,
           "config": {"steps": 2, "init_word": "and"}},
}  # fmt: skip


def test_tables_hold_the_numbers_of_the_files():
    timing = timing_table(TIMINGS)
    assert timing.rows == (
        ("SD teacher (ReVersion)", "DDIM, CFG 7.5", 50, 4.5, "—", "—"),
        ("DKD one-step student", "one step, no CFG", 1, 0.5, pytest.approx(100 * (1 - 0.5 / 4.5)), 88.89),
    )
    assert "median of 20 calls after 3 warm-up on NVIDIA A40 (bfloat16)" in timing.note and "`hug`" in timing.note
    images = {r: {"teacher": {"count": 7}, "student": {"count": 5}} for r in INVERSIONS}
    relations = relations_table(INVERSIONS, images)
    assert relations.rows == (("hug", 6, 18, 3000, 3600.5, 0.42, 7, 5), ("on", 4, 8, 2, 2.5, 0.9, 7, 5))
    assert relations.columns[5] == "cos(<R>, and)"


def test_summary_round_trips_and_renders(tmp_path):
    root = tmp_path / "downstream" / "reversion"
    images = {}
    for relation in INVERSIONS:
        colours = [(k, k, k) for k in range(3)]
        images[relation] = {m: _images(root / relation / m / "images", colours) for m in ("teacher", "student")}
        relation_grid(images[relation]["teacher"], images[relation]["student"], root / relation / "grid.png")
    grids = {r: f"{r}/grid.png" for r in INVERSIONS}
    summary = reversion_summary(INVERSIONS, images, TIMINGS, grids, words={"hug": "hugging", "on": "on"},
                                notes=["a note"])  # fmt: skip
    write_summary(root / "summary.json", summary)
    back = read_summary(root / "summary.json")
    assert back.target == "reversion" and back.paper == "Fig. 6 and Fig. 23" and back.notes == ("a note",)
    assert [f.file for f in back.figures] == ["hug/grid.png", "on/grid.png"]
    assert "relation `hug` (hugging)" in back.figures[0].caption and '"p0 <R>"' in back.figures[0].caption
    text = render_section([root / "summary.json"], tmp_path)
    assert "![ReVersion, relation `on` (on)" in text and "(downstream/reversion/on/grid.png)" in text
    assert "| DKD one-step student | one step, no CFG | 1 | 0.500 | 88.889 | 88.890 |" in text
