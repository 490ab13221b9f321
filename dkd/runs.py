"""Run names: a distillation run's settings are its name, and the name parses back.

``[{objective}-]{method}-s{rank}-f{fake}-{layers}-{init}``, e.g. ``lorad-s256-f32-linear-zero`` (DKD):

* ``objective``: none for DKD, else a baseline's prefix (``dkd/vocabulary.yaml`` ``runs.objectives``:
  ``sidlsg`` is SiD-LSG, ``swiftbrush`` SwiftBrush, ``pgsb`` PG-SB, ``sbv2`` SwiftBrush v2;
  ``dkd.train.objective``);
* ``method``: the student's ``lorad`` | ``lora`` | ``dora`` | ``ft``;
* ``s{rank}``: the student's rank (``sfull`` for ``ft``);
* ``f{fake}``: the fake model's LoRaD rank, ``fft`` for a fully trained fake (DMD2, SiD-LSG), or
  ``flora{rank}`` for a LoRA fake with the objective's targets and scale (:data:`FAKE_LORA`; SwiftBrush's
  "LoRA teacher");
* ``layers``: ``linear`` or ``conv`` (linear + conv, Table 7);
* ``init``: ``zero`` (A = 0, B Xavier) or ``xavier`` (both Xavier, Table 8);

then two optional variants (``dkd/vocabulary.yaml`` ``runs``): ``-g{N}`` (N >= 2) trains with N fake updates
per generator update over N times the steps, so with as many generator updates as the plain run (DMD2's
10:1), and ``-seed{K}`` (K >= 1) with the settings' seed plus K (the adapters' initialisation, the noise
and the prompt order: ``DistillConfig.seed``), e.g. ``lorad-s8-f4-linear-zero-g10-seed2``.

The paper's runs: DKD ``lorad-s256-f32-linear-zero`` (PixArt: ``lorad-s128-f32-...``), Table 2
``lora-s256-f32-...``, ``dora-s256-f32-...``, ``ft-sfull-fft-linear-zero`` (DMD2), Table 3
``lorad-s{64,128,512}-f32-...`` and ``lorad-s256-f{16,64}-...``, Table 7 ``...-conv-zero``,
Table 8 ``...-linear-xavier``; the reproduced baselines ``sidlsg-ft-sfull-fft-linear-zero`` and
``swiftbrush-ft-sfull-flora64-linear-zero``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .adapters import METHODS, AdapterSpec
from .vocabulary import INITS, LAYERS, OBJECTIVE_PREFIXES, RATIO_SUFFIX, SEED_SUFFIX

_PATTERN = re.compile(
    r"((?P<objective>[a-z0-9]+)-)?(?P<method>[a-z]+)-s(?P<rank>\d+|full)-f(?P<fake>\d+|ft|lora\d+)"
    rf"-(?P<layers>[a-z]+)-(?P<init>[a-z]+)(-{RATIO_SUFFIX}(?P<ratio>\d+))?(-{SEED_SUFFIX}(?P<seed>\d+))?"
)
# A LoRA fake's targets and scale (lora_alpha / rank), per objective (default: the fake role's targets, scale 1);
# the scale, not lora_alpha, carries over to other ranks (the toy's). SwiftBrush (VinAIResearch/SwiftBrush
# train_swiftbrush.py, README): LoraConfig(r=64, lora_alpha=108, target_modules=["to_q", "to_v"]). PG-SB and
# SwiftBrush v2: "r = 64, gamma = 128" (targets not stated: SwiftBrush's).
FAKE_LORA: dict[str, dict] = {
    "swiftbrush": {"targets": ("to_q", "to_v"), "scale": 108 / 64},
    "pg_sb": {"targets": ("to_q", "to_v"), "scale": 2.0},
    "swiftbrush_v2": {"targets": ("to_q", "to_v"), "scale": 2.0},
}
# A LoRA student's scale, per objective (default 1). SwiftBrush v2's scheme B: "r = 256 and gamma = 512".
STUDENT_LORA: dict[str, float] = {"swiftbrush_v2": 2.0}


def _alpha(scale: float | None, rank: int) -> float | None:
    """lora_alpha of a LoRA with ``scale`` at ``rank`` (None: scale 1, PEFT's alpha = rank)."""
    return None if scale is None else scale * rank


@dataclass(frozen=True)
class RunSpec:
    """What a run name says: the objective, the two trained models, the fake updates per generator
    update (``-g{N}``; 1: the settings') and the offset added to the settings' seed (``-seed{K}``)."""

    objective: str
    student: AdapterSpec
    fake: AdapterSpec
    generator_every: int = 1
    seed_offset: int = 0


def parse_run_name(backbone: str, name: str) -> RunSpec:
    """The :class:`RunSpec` of run ``name`` on ``backbone``; one clear error otherwise."""
    match = _PATTERN.fullmatch(name)
    if not match:
        raise ValueError(
            f"run name {name!r} is not '[{{objective}}-]{{method}}-s{{rank}}-f{{fake}}-{{layers}}-{{init}}', "
            "e.g. 'lorad-s256-f32-linear-zero' (variants: '-g10', '-seed1' after it)."
        )
    prefix, method, rank, fake, layers, init = match.group("objective", "method", "rank", "fake", "layers", "init")
    ratio, seed = match.group("ratio", "seed")
    if ratio is not None and (int(ratio) < 2 or ratio != str(int(ratio))):
        raise ValueError(f"run {name!r}: '-{RATIO_SUFFIX}{{N}}' needs a whole N >= 2 without leading zeros.")
    if seed is not None and (int(seed) < 1 or seed != str(int(seed))):
        raise ValueError(f"run {name!r}: '-{SEED_SUFFIX}{{K}}' needs a whole K >= 1 without leading zeros.")
    if prefix is not None and prefix not in OBJECTIVE_PREFIXES:
        raise ValueError(
            f"run {name!r}: the objective prefix must be one of {sorted(OBJECTIVE_PREFIXES)}; got {prefix!r}."
        )
    objective = "dkd" if prefix is None else OBJECTIVE_PREFIXES[prefix]
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
        alpha=_alpha(STUDENT_LORA.get(objective), int(rank)) if method == "lora" else None,
    )
    if fake == "ft":
        fake_spec = AdapterSpec(backbone, "fake", "ft", rank=1)
    elif fake.startswith("lora"):
        lora, rank_f = FAKE_LORA.get(objective, {}), int(fake[4:])
        fake_spec = AdapterSpec(
            backbone, "fake", "lora", rank=rank_f, targets=lora.get("targets"), alpha=_alpha(lora.get("scale"), rank_f)
        )
    else:
        fake_spec = AdapterSpec(backbone, "fake", "lorad", rank=int(fake))
    return RunSpec(
        objective,
        student,
        fake_spec,
        generator_every=1 if ratio is None else int(ratio),
        seed_offset=0 if seed is None else int(seed),
    )


def run_name(spec: RunSpec) -> str:
    """Inverse of ``parse_run_name``."""
    student, fake = spec.student, spec.fake
    if student.method == "lora" and student.alpha != _alpha(STUDENT_LORA.get(spec.objective), student.rank):
        raise ValueError(f"a {spec.objective} run name describes a LoRA student with its objective's scale.")
    lora = FAKE_LORA.get(spec.objective, {})
    if fake.method == "lora" and (fake.targets, fake.alpha) != (
        lora.get("targets"),
        _alpha(lora.get("scale"), fake.rank),
    ):
        raise ValueError(f"a {spec.objective} run name describes a LoRA fake with {lora or 'the default targets'}.")
    if fake.method not in ("lorad", "ft", "lora"):
        raise ValueError("run names describe LoRaD, LoRA or fully trained fake models only.")
    prefixes = {objective: prefix for prefix, objective in OBJECTIVE_PREFIXES.items()}
    if spec.objective != "dkd" and spec.objective not in prefixes:
        raise ValueError(f"no run-name prefix for objective {spec.objective!r}.")
    prefix = "" if spec.objective == "dkd" else f"{prefixes[spec.objective]}-"
    rank = "full" if student.method == "ft" else str(student.rank)
    fake_part = {"ft": "ft", "lora": f"lora{fake.rank}"}.get(fake.method, str(fake.rank))
    layers = {v: k for k, v in LAYERS.items()}[student.layers]
    init = {v: k for k, v in INITS.items()}[student.init]
    if spec.generator_every < 1 or spec.seed_offset < 0:
        raise ValueError(f"generator_every must be >= 1 and seed_offset >= 0; got {spec}.")
    ratio = f"-{RATIO_SUFFIX}{spec.generator_every}" if spec.generator_every > 1 else ""
    seed = f"-{SEED_SUFFIX}{spec.seed_offset}" if spec.seed_offset else ""
    return f"{prefix}{student.method}-s{rank}-f{fake_part}-{layers}-{init}{ratio}{seed}"
