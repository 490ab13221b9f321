"""SwiftBrush v2's pieces outside the loss: a student started from another checkpoint of the teacher's
architecture (SD-Turbo), and the weight merge of two students, against closed forms."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dkd.adapters import AdapterSpec
from dkd.backbones import BackboneNotFoundError, load_denoiser, load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.sampling import STUDENT_INFO
from dkd.train.config import DistillConfig
from dkd.train.loop import Distiller
from dkd.train.merge import merge_students, merge_weights


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return [save_tiny_backbone("sd", root / f"seed{seed}", seed=seed) for seed in (1, 2)]


def _config(**overrides):
    return DistillConfig(
        backbone="tiny-sd",
        student=AdapterSpec("tiny-sd", "student", overrides.pop("method", "lora"), rank=2),
        fake=AdapterSpec("tiny-sd", "fake", "lorad", rank=2),
        batch_size=2,
        per_device_batch=2,
        max_steps=1,
        **overrides,
    )


@pytest.mark.parametrize("method", ["lora", "ft"])
def test_student_init_starts_the_student_from_another_checkpoint(folders, tmp_path, method):
    """The student's base weights are the other checkpoint's; the teacher and the fake stay the teacher's."""
    teacher = load_teacher("tiny-sd", str(folders[0]))
    other = load_denoiser("tiny-sd", str(folders[1])).state_dict()
    distiller = Distiller(_config(method=method, student_init=str(folders[1])), teacher, ["a", "b"], tmp_path)
    student = {k.replace(".base_layer", ""): v for k, v in distiller.models["student"].state_dict().items()}
    fake = {k.replace(".base_layer", ""): v for k, v in distiller.models["fake"].state_dict().items()}
    for name, weight in other.items():
        assert torch.equal(student[name].float(), weight.float()), name
    assert all(torch.equal(fake[n], w) for n, w in teacher.denoiser.state_dict().items() if n in fake)
    assert any(not torch.equal(other[n], w) for n, w in teacher.denoiser.state_dict().items())
    default = Distiller(_config(method=method), teacher, ["a", "b"], tmp_path / "default")
    assert distiller.fingerprint != default.fingerprint  # the start is part of the run's identity


def test_student_init_of_another_architecture_is_one_clear_error(folders, tmp_path):
    pixart = save_tiny_backbone("pixart", tmp_path / "pixart", seed=1)
    with pytest.raises(BackboneNotFoundError, match="No diffusers folder"):
        Distiller(
            _config(student_init=str(tmp_path / "nothing-here")),
            load_teacher("tiny-sd", str(folders[0])),
            ["a"] * 2,
            tmp_path,
        )
    with pytest.raises(BackboneNotFoundError, match="Cannot load the denoiser"):
        Distiller(_config(student_init=str(pixart)), load_teacher("tiny-sd", str(folders[0])), ["a"] * 2, tmp_path)


def test_merge_weights_is_the_convex_combination():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(3, 4, generator=g), "h": torch.randn(2, generator=g).bfloat16(), "n": torch.tensor([1, 2])}
    b = {"w": torch.randn(3, 4, generator=g), "h": torch.randn(2, generator=g).bfloat16(), "n": torch.tensor([1, 2])}
    merged = merge_weights(a, b, 0.3)
    torch.testing.assert_close(merged["w"], (0.3 * a["w"].double() + 0.7 * b["w"].double()).float(), rtol=0, atol=0)
    assert merged["h"].dtype == torch.bfloat16 and torch.equal(merged["n"], a["n"])
    assert all(torch.equal(merge_weights(a, b, 1.0)[k], a[k]) for k in a)
    for bad, message in [({**b, "x": b["w"]}, "different weights"), ({**b, "w": b["w"].T}, "shapes"),
                         ({**b, "n": torch.tensor([1, 3])}, "non-float")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            merge_weights(a, bad, 0.5)
    with pytest.raises(ValueError, match="weight"):
        merge_weights(a, b, 1.5)


def test_merge_students_writes_a_pipeline_with_the_merged_denoiser(folders, tmp_path):
    students = []
    for k, folder in enumerate(folders):
        student = shutil.copytree(folder, tmp_path / f"student{k}")
        info = {"backbone": "tiny-sd", "t_init": 999, "scaled_input": False, "prediction_type": "epsilon"}
        (student / STUDENT_INFO).write_text(json.dumps({**info, "objective": "swiftbrush_v2", "method": "ft"}))
        students.append(student)
    out = merge_students(*students, tmp_path / "merged", weight=0.25)
    merged = load_denoiser("tiny-sd", str(out)).state_dict()
    a, b = (load_denoiser("tiny-sd", str(s)).state_dict() for s in students)
    for name in a:
        torch.testing.assert_close(merged[name], (0.25 * a[name].double() + 0.75 * b[name].double()).float())
    assert (out / "vae").is_dir() and json.loads((out / STUDENT_INFO).read_text())["merged"]["weight"] == 0.25
    teacher = load_teacher("tiny-sd", str(out))  # a complete pipeline folder: the samplers load it
    assert teacher.text_encoder is not None
    info = json.loads((students[1] / STUDENT_INFO).read_text())
    (students[1] / STUDENT_INFO).write_text(json.dumps({**info, "t_init": 625, "scaled_input": True}))
    with pytest.raises(ValueError, match="differ in"):
        merge_students(*students, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
