"""The ScaleCrafter comparison's parts: an arm's images and counts, the grid, the table's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.downstream.scalecrafter.compare import (
    GRID_CELL,
    LABEL_WIDTH,
    SAVING,
    HighResStudent,
    arm_sampler,
    comparison_grid,
    comparison_rows,
    generate_arm,
    parse_resolution,
)
from dkd.downstream.scalecrafter.redilation import HighResSpec, one_step_high_res
from dkd.downstream.scalecrafter.teacher import ScaleCrafterTeacher
from dkd.sampling import OneStepPipeline


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=4))


def test_an_arm_writes_every_prompt_seed_pair_and_counts_its_unet_rows(folder, tmp_path):
    pipe = OneStepPipeline(load_teacher("tiny-sd", folder))
    spec = HighResSpec(32, 24)
    prompts, seeds = ["a cat", "a dog"], [1, 2, 3]
    record = generate_arm(
        HighResStudent(pipe, spec), prompts, seeds, tmp_path, batch_size=4, timing={"warmup": 0, "repeats": 2}
    )
    pairs = [(p, s) for p in prompts for s in seeds]
    assert [(i["prompt"], i["seed"]) for i in record["images"]] == pairs
    expected = one_step_high_res(pipe, [p for p, _ in pairs], [s for _, s in pairs], spec)
    for item, image in zip(record["images"], expected):
        assert item["size"] == [24, 32]
        with Image.open(tmp_path / item["file"]) as saved:
            assert saved.tobytes() == image.tobytes()
    assert record["unet_evaluations_per_image"] == 1
    assert record["timing"]["repeats"] == 2 and record["seconds_per_image"] > 0
    first, second = record["timing"]["times_s"]
    assert record["seconds_per_image"] == (first + second) / 2  # the median of the two timed calls
    assert record["timing"]["image_size"] == [24, 32]


def test_the_teacher_arm_counts_cfg_and_the_noise_damped_pass(folder, tmp_path):
    schedule = {"height": 32, "width": 32, "dilate_tau": 2, "ndcfg_tau": 2, "progressive": True}
    teacher = {"steps": 3, "guidance_scale": 7.5, "eta": 1.0}
    sampler, spec, steps = arm_sampler(
        "teacher-redilated", "32x32", source=folder, backbone="tiny-sd", schedule=schedule, teacher=teacher
    )
    assert isinstance(sampler, ScaleCrafterTeacher) and steps == 3 and spec == HighResSpec(32, 32)
    assert sampler.schedule.ndcfg_tau == 2 and sampler.eta == 1.0
    record = generate_arm(sampler, ["a cat"], [0, 1], tmp_path, batch_size=2, timing={"warmup": 0, "repeats": 1})
    assert record["unet_evaluations_per_image"] == 3 * 2 + 2 == sampler.unet_rows_per_image
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_arm_sampler_refuses_missing_settings(folder):
    with pytest.raises(ValueError, match="teacher's settings"):
        arm_sampler("teacher-redilated", "32x32", source=folder, backbone="tiny-sd", schedule={"dilate_tau": 1})
    with pytest.raises(ValueError, match="FreeU"):
        arm_sampler("student-redilated-freeu", "32x32", source=folder, backbone="tiny-sd")
    with pytest.raises(ValueError, match="unknown"):
        arm_sampler("teacher", "32x32", source=folder, backbone="tiny-sd")
    for bad in ("1024", "1024x", "axb", "1024*1024"):
        with pytest.raises(ValueError, match="resolution"):
            parse_resolution(bad)
    assert parse_resolution("2048x1024") == (2048, 1024)


def test_the_grid_has_a_labelled_row_per_arm(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        array = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)  # 64 wide, 32 high
        Image.fromarray(array).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    out = comparison_grid([("student", paths[:2]), ("teacher-redilated", paths[2:])], tmp_path / "grid.png")
    with Image.open(out) as grid:
        assert grid.size == (LABEL_WIDTH + 2 * 2 * GRID_CELL, 2 * GRID_CELL)
        cell = grid.crop((LABEL_WIDTH + 2 * GRID_CELL, GRID_CELL, LABEL_WIDTH + 4 * GRID_CELL, 2 * GRID_CELL))
        with Image.open(paths[3]) as image:  # row 2, column 2: enlarged 8x by nearest neighbour
            expected = image.resize((2 * GRID_CELL, GRID_CELL), Image.NEAREST)
        assert cell.tobytes() == expected.tobytes()
        label = np.asarray(grid.crop((0, 0, LABEL_WIDTH, GRID_CELL)))
        assert (label < 128).any() and (label == 255).mean() > 0.9  # some dark text on white
    with pytest.raises(ValueError):
        comparison_grid([("student", [])], tmp_path / "empty.png")


def test_table_rows_and_the_time_saving():
    records = [
        {"resolution": "64x64", "arm": "student", "steps": 1, "unet_evaluations_per_image": 1},
        {"resolution": "64x64", "arm": "teacher-redilated", "steps": 4, "unet_evaluations_per_image": 8},
    ]
    records[0]["seconds_per_image"], records[1]["seconds_per_image"] = 0.5, 2.0
    columns, rows = comparison_rows(records)
    assert columns[-1] == SAVING
    assert rows == [["64x64", "student", 1, 1, 0.5, 75.0], ["64x64", "teacher-redilated", 4, 8, 2.0, 0.0]]
    columns, rows = comparison_rows(records[:1])  # no teacher: no saving column
    assert SAVING not in columns and rows == [["64x64", "student", 1, 1, 0.5]]
    json.dumps(rows)  # plain JSON numbers
