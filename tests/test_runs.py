"""Run names parse into the adapter specs of the paper's runs and back."""

from __future__ import annotations

import pytest

from dkd.adapters import AdapterSpec
from dkd.runs import parse_run_name, run_name
from dkd.train.run import run_config


@pytest.mark.parametrize(
    "name,student,fake",
    [
        ("lorad-s256-f32-linear-zero", ("lorad", 256, "linear", "zero_xavier"), ("lorad", 32)),
        ("lorad-s64-f16-conv-xavier", ("lorad", 64, "linear+conv", "xavier_xavier"), ("lorad", 16)),
        ("lora-s256-f32-linear-zero", ("lora", 256, "linear", "zero_xavier"), ("lorad", 32)),
        ("ft-sfull-fft-linear-zero", ("ft", 1, "linear", "zero_xavier"), ("ft", 1)),
    ],
)
def test_parse_and_round_trip(name, student, fake):
    spec = parse_run_name("sd15", name)
    s, f = spec.student, spec.fake
    assert (s.method, s.rank, s.layers, s.init) == student and (s.role, f.role) == ("student", "fake")
    assert (f.method, f.rank) == fake and spec.objective == "dkd"
    assert run_name(spec) == name


@pytest.mark.parametrize(
    "name,objective,fake",
    [
        ("sidlsg-ft-sfull-fft-linear-zero", "sid_lsg", ("ft", 1, None, None)),
        ("swiftbrush-ft-sfull-flora64-linear-zero", "swiftbrush", ("lora", 64, ("to_q", "to_v"), 108)),
        ("sidlsg-lorad-s64-flora8-linear-zero", "sid_lsg", ("lora", 8, None, None)),  # the fake role's targets
        ("pgsb-ft-sfull-flora64-linear-zero", "pg_sb", ("lora", 64, ("to_q", "to_v"), 128)),
        ("sbv2-lora-s256-flora64-linear-zero", "swiftbrush_v2", ("lora", 64, ("to_q", "to_v"), 128)),
    ],
)
def test_baseline_names_say_their_objective_and_fake(name, objective, fake):
    spec = parse_run_name("sd21", name)
    assert spec.objective == objective and run_name(spec) == name
    assert (spec.fake.method, spec.fake.rank, spec.fake.targets, spec.fake.alpha) == fake
    if spec.student.method == "lora":  # SwiftBrush v2's scheme B: LoRA r256, gamma 512
        assert (spec.student.rank, spec.student.alpha, spec.student.peft_config().lora_alpha) == (256, 512, 512)
    config = spec.fake.peft_config()
    if fake[2]:  # SwiftBrush's LoRA teacher: r 64 on to_q / to_v, alpha 108 (PG-SB: 128)
        assert set(config.target_modules) == {"to_q", "to_v"} and (config.r, config.lora_alpha) == (fake[1], fake[3])


@pytest.mark.parametrize(
    "name,message",
    [
        ("lorad-256-f32-linear-zero", "is not"),
        ("oft-s4-f2-linear-zero", "method must be"),
        ("lorad-s4-f2-all-zero", "layers must be"),
        ("ft-s256-fft-linear-zero", "sfull"),
        ("lorad-sfull-f2-linear-zero", "sfull"),
        ("lorad-s0-f2-linear-zero", "rank must be"),
        ("sid-ft-sfull-fft-linear-zero", "prefix must be"),
        ("swiftbrush-ft-sfull-fdora4-linear-zero", "is not"),
        ("lorad-s4-f2-linear-zero-g1", "N >= 2"),
        ("lorad-s4-f2-linear-zero-g010", "leading zeros"),
        ("lorad-s4-f2-linear-zero-seed0", "K >= 1"),
        ("lorad-s4-f2-linear-zero-seed1-g10", "is not"),  # the ratio comes first
    ],
)
def test_invalid_names(name, message):
    with pytest.raises(ValueError, match=message):
        parse_run_name("sd15", name)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="Unknown backbone"):
        parse_run_name("sd3", "lorad-s256-f32-linear-zero")
    assert AdapterSpec("tiny-sd").backbone == "tiny-sd"


@pytest.mark.parametrize(
    "name,ratio,offset",
    [
        ("lorad-s8-f4-linear-zero-g10", 10, 0),
        ("lorad-s8-f4-linear-zero-seed3", 1, 3),
        ("sidlsg-ft-sfull-fft-linear-zero-g2-seed12", 2, 12),
    ],
)
def test_variants_parse_and_round_trip(name, ratio, offset):
    spec = parse_run_name("toy", name)
    assert (spec.generator_every, spec.seed_offset) == (ratio, offset)
    plain = parse_run_name("toy", name.split("-g")[0].split("-seed")[0])
    assert (spec.objective, spec.student, spec.fake) == (plain.objective, plain.student, plain.fake)
    assert run_name(spec) == name


def test_a_variant_turns_its_plain_runs_settings():
    """-g10: ten fake updates per generator update over ten times the steps (the same 400 generator
    updates, checkpoints, log lines and evaluations); -seed2: the seed plus 2; the rest unchanged."""
    settings = dict(max_steps=400, checkpoint_every=100, log_every=25, eval_every=100, seed=7, batch_size=32,
                    per_device_batch=32, optim_student={"lr": 2e-3})  # fmt: skip
    plain = run_config("toy", "lorad-s8-f4-linear-zero", settings)
    varied = run_config("toy", "lorad-s8-f4-linear-zero-g10-seed2", settings)
    assert (plain.generator_every, plain.max_steps, plain.seed) == (1, 400, 7)
    assert (varied.generator_every, varied.max_steps, varied.checkpoint_every) == (10, 4000, 1000)
    assert (varied.log_every, varied.eval_every, varied.seed) == (250, 1000, 9)
    assert varied.updates(varied.max_steps) == plain.updates(plain.max_steps) | {"fake_updates": 4000}
    assert (varied.optim_student, varied.student, varied.fake) == (plain.optim_student, plain.student, plain.fake)
    epochs = run_config("toy", "lorad-s8-f4-linear-zero-g3", {"epochs": 2})  # no max_steps: the epochs scale
    assert (epochs.epochs, epochs.max_steps, epochs.checkpoint_every) == (6, None, 1500)
    with pytest.raises(ValueError, match="drop generator_every"):
        run_config("toy", "lorad-s8-f4-linear-zero-g10", {"generator_every": 5})
