"""Run names: a distillation run's settings are its name, and the name parses back.

``{method}-s{rank}-f{fake}-{layers}-{init}``, e.g. ``lorad-s256-f32-linear-zero`` (DKD):

* ``method``: the student's ``lorad`` | ``lora`` | ``dora`` | ``ft``;
* ``s{rank}``: the student's rank (``sfull`` for ``ft``);
* ``f{fake}``: the fake model's LoRaD rank, or ``fft`` for a fully trained fake (DMD2);
* ``layers``: ``linear`` or ``conv`` (linear + conv, Table 7);
* ``init``: ``zero`` (A = 0, B Xavier) or ``xavier`` (both Xavier, Table 8).

The paper's runs: DKD ``lorad-s256-f32-linear-zero`` (PixArt: ``lorad-s128-f32-...``), Table 2
``lora-s256-f32-...``, ``dora-s256-f32-...``, ``ft-sfull-fft-linear-zero`` (DMD2), Table 3
``lorad-s{64,128,512}-f32-...`` and ``lorad-s256-f{16,64}-...``, Table 7 ``...-conv-zero``,
Table 8 ``...-linear-xavier``.
"""

from __future__ import annotations

import re

from .adapters import METHODS, AdapterSpec
from .vocabulary import INITS, LAYERS

_PATTERN = re.compile(r"(?P<method>[a-z]+)-s(?P<rank>\d+|full)-f(?P<fake>\d+|ft)-(?P<layers>[a-z]+)-(?P<init>[a-z]+)")


def parse_run_name(backbone: str, name: str) -> tuple[AdapterSpec, AdapterSpec]:
    """``(student, fake)`` adapter specs of run ``name`` on ``backbone``; one clear error otherwise."""
    match = _PATTERN.fullmatch(name)
    if not match:
        raise ValueError(
            f"run name {name!r} is not '{{method}}-s{{rank}}-f{{fake}}-{{layers}}-{{init}}', "
            "e.g. 'lorad-s256-f32-linear-zero'."
        )
    method, rank, fake, layers, init = match.group("method", "rank", "fake", "layers", "init")
    if method not in METHODS:
        raise ValueError(f"run {name!r}: method must be one of {METHODS}; got {method!r}.")
    if layers not in LAYERS or init not in INITS:
        raise ValueError(f"run {name!r}: layers must be one of {sorted(LAYERS)} and init one of {sorted(INITS)}.")
    if (method == "ft") != (rank == "full"):
        raise ValueError(f"run {name!r}: use 'sfull' exactly for method 'ft'.")
    student = AdapterSpec(
        backbone,
        "student",
        method,
        rank=1 if rank == "full" else int(rank),
        layers="linear" if method == "ft" else LAYERS[layers],
        init=INITS[init],
    )
    fake_spec = AdapterSpec(backbone, "fake", "ft" if fake == "ft" else "lorad", rank=1 if fake == "ft" else int(fake))
    return student, fake_spec


def run_name(student: AdapterSpec, fake: AdapterSpec) -> str:
    """Inverse of ``parse_run_name``."""
    if fake.method not in ("lorad", "ft"):
        raise ValueError("run names describe LoRaD or fully trained fake models only.")
    rank = "full" if student.method == "ft" else str(student.rank)
    fake_part = "ft" if fake.method == "ft" else str(fake.rank)
    layers = {v: k for k, v in LAYERS.items()}[student.layers]
    init = {v: k for k, v in INITS.items()}[student.init]
    return f"{student.method}-s{rank}-f{fake_part}-{layers}-{init}"
