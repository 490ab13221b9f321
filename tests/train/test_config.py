"""``DistillConfig`` and ``OptimConfig``: validated at construction, one clear error per bad value,
and a JSON round trip (the workflow's job file and the checkpoints store the dict)."""

from __future__ import annotations

import json

import pytest
import yaml

from dkd.adapters import AdapterSpec
from dkd.train.config import DistillConfig, OptimConfig
from dkd.train.objective import ObjectiveConfig

STUDENT = AdapterSpec("sd15", "student", "lorad", rank=256)
FAKE = AdapterSpec("sd15", "fake", "lorad", rank=32)


def _config(**overrides):
    return DistillConfig(**{"backbone": "sd15", "student": STUDENT, "fake": FAKE, **overrides})


def test_paper_defaults_and_accumulation():
    config = _config()
    assert (config.batch_size, config.per_device_batch, config.epochs) == (128, 16, 2)
    assert (config.optim_student.lr, config.optim_fake.lr, config.objective.guidance_scale) == (1e-4, 1e-2, 1.5)
    assert [config.accumulation_steps(n) for n in (1, 2, 8)] == [8, 4, 1]
    with pytest.raises(ValueError, match="not a multiple of per_device_batch x processes = 48"):
        config.accumulation_steps(3)


@pytest.mark.parametrize(
    "overrides",
    [
        {"compile_blocks": ("BasicTransformerBlock", "ResnetBlock2D"), "channels_last": True},
        {"compile_blocks": True, "embedding_cache": "/scratch/embeds", "max_steps": 10, "eval_every": 5},
        {"objective": ObjectiveConfig(generator_loss="sds", t_range=(0.1, 0.9)), "optim_fake": OptimConfig(lr=1e-3)},
        {
            "objective": ObjectiveConfig.named("sid_lsg", guidance_range=(0.5, 3.0)),
            "optim_student": OptimConfig(lr=1e-6, betas=(0.0, 0.999), weight_decay=0.0, grad_clip=None),
        },
    ],
)
def test_json_round_trip(overrides):
    config = _config(**overrides)
    assert DistillConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_compile_blocks_list_becomes_a_tuple():
    assert _config(compile_blocks=["ResnetBlock2D"]).compile_blocks == ("ResnetBlock2D",)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"batch_size": 100}, "batch_size 100 must be a multiple of per_device_batch 16"),
        ({"per_device_batch": 0}, "per_device_batch must be a positive integer"),
        ({"epochs": True}, "epochs must be a positive integer"),
        ({"max_steps": 0}, "max_steps must be a positive integer or None"),
        ({"mixed_precision": "bfloat16"}, "mixed_precision must be one of"),
        ({"channels_last": "yes"}, "channels_last must be true or false"),
        ({"compile_blocks": "ResnetBlock2D"}, "compile_blocks must be true, false or a list of module class names"),
        ({"compile_blocks": []}, "compile_blocks must be"),
        ({"compile_blocks": ["Resnet Block"]}, "compile_blocks must be"),
        ({"embedding_cache": ""}, "embedding_cache must be a folder path"),
        ({"backbone": "sd21"}, "student spec must have backbone='sd21'"),
        ({"fake": STUDENT}, "fake spec must have backbone='sd15' and role='fake'"),
        ({"student": "lorad"}, "student must be an AdapterSpec"),
    ],
)
def test_invalid_settings(overrides, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _config(**overrides)


def test_unknown_setting_is_named():
    data = _config().to_dict()
    data["compile_block"] = True
    with pytest.raises(ValueError, match=r"unknown distillation settings: \['compile_block'\]"):
        DistillConfig.from_dict(data)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lr": 0}, "lr must be > 0"),
        ({"lr": 1e-4, "betas": (0.9, 1.0)}, "betas"),
        ({"lr": 1e-4, "grad_clip": 0}, "grad_clip"),
        ({"lr": 1e-4, "warmup_steps": -1}, "warmup_steps"),
        ({"lr": "3e-4"}, r"lr must be a number; got '3e-4' \(YAML reads 1e-4 as text: write 1.0e-4\)"),
        ({"lr": 1e-4, "betas": (0.9, "x")}, "betas must be a number"),
        ({"lr": 1e-4, "warmup_steps": 2.5}, "whole number"),
    ],
)
def test_invalid_optimiser(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimConfig(**kwargs)


def test_a_nested_setting_given_in_part_keeps_the_other_defaults():
    data = {**_config().to_dict(), "optim_student": {"warmup_steps": 100}, "objective": {"guidance_scale": 2.0}}
    config = DistillConfig.from_dict(data)
    assert config.optim_student == OptimConfig(lr=1e-4, warmup_steps=100)  # the paper's student lr kept
    assert config.objective == ObjectiveConfig(guidance_scale=2.0)
    sid = DistillConfig.from_dict({**data, "objective": {"name": "sid_lsg", "sid_alpha": 1.2}}).objective
    assert sid == ObjectiveConfig.named("sid_lsg", sid_alpha=1.2)  # the named objective's other hooks kept
    with pytest.raises(ValueError, match="objective must be one of"):
        DistillConfig.from_dict({**data, "objective": {"name": "sid"}})
    with pytest.raises(ValueError, match=r"unknown optim_fake settings: \['learning_rate'\]"):
        DistillConfig.from_dict({**_config().to_dict(), "optim_fake": {"learning_rate": 1.0}})
    with pytest.raises(ValueError, match="objective must be a mapping"):
        DistillConfig.from_dict({**_config().to_dict(), "objective": 2})


def test_a_number_read_as_text_from_yaml_is_one_clear_error():
    """PyYAML (YAML 1.1) reads `guidance_scale: 2e0` and `lr: 1e-4` as strings."""
    data = yaml.safe_load("objective: {guidance_scale: 2e0}\noptim_fake: {lr: 1e-2}\n")
    assert data["objective"]["guidance_scale"] == "2e0"
    with pytest.raises(ValueError, match="guidance_scale must be a number; got '2e0'"):
        DistillConfig.from_dict({**_config().to_dict(), "objective": data["objective"]})
    with pytest.raises(ValueError, match="lr must be a number; got '1e-2'"):
        DistillConfig.from_dict({**_config().to_dict(), "optim_fake": data["optim_fake"]})
