"""Run names parse into the adapter specs of the paper's runs and back."""

from __future__ import annotations

import pytest

from dkd.adapters import AdapterSpec
from dkd.runs import parse_run_name, run_name


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
    s, f = parse_run_name("sd15", name)
    assert (s.method, s.rank, s.layers, s.init) == student and (s.role, f.role) == ("student", "fake")
    assert (f.method, f.rank) == fake
    assert run_name(s, f) == name


@pytest.mark.parametrize(
    "name,message",
    [
        ("lorad-256-f32-linear-zero", "is not"),
        ("oft-s4-f2-linear-zero", "method must be"),
        ("lorad-s4-f2-all-zero", "layers must be"),
        ("ft-s256-fft-linear-zero", "sfull"),
        ("lorad-sfull-f2-linear-zero", "sfull"),
        ("lorad-s0-f2-linear-zero", "rank must be"),
    ],
)
def test_invalid_names(name, message):
    with pytest.raises(ValueError, match=message):
        parse_run_name("sd15", name)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="Unknown backbone"):
        parse_run_name("sd3", "lorad-s256-f32-linear-zero")
    assert AdapterSpec("tiny-sd").backbone == "tiny-sd"
