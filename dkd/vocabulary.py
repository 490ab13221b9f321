"""The names the workflow and the package share, read once from ``dkd/vocabulary.yaml``.

The workflow loads this module by its path (``workflow/rules/common.smk``), not as part of ``dkd``:
it imports only the standard library and PyYAML, so the rules load where ``dkd`` is not importable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

_NAMES = yaml.safe_load(Path(__file__).with_name("vocabulary.yaml").read_text())

OBJECTIVE_PREFIXES: dict[str, str] = dict(_NAMES["runs"]["objectives"])
SCORED_OBJECTIVES: tuple[str, ...] = tuple(_NAMES["runs"]["scored"])
METHODS: tuple[str, ...] = tuple(_NAMES["runs"]["methods"])
LAYERS: dict[str, str] = dict(_NAMES["runs"]["layers"])
INITS: dict[str, str] = dict(_NAMES["runs"]["inits"])
RATIO_SUFFIX: str = _NAMES["runs"]["ratio_suffix"]
SEED_SUFFIX: str = _NAMES["runs"]["seed_suffix"]
_RATIO = rf"-{RATIO_SUFFIX}([2-9]|[1-9]\d+)"  # -g{N}, N >= 2
_SEED = rf"-{SEED_SUFFIX}[1-9]\d*"  # -seed{K}, K >= 1
SETTINGS_RUN_PATTERN = (  # a run without its seed: the keys of distill.run_settings
    rf"(({'|'.join(OBJECTIVE_PREFIXES)})-)?({'|'.join(METHODS)})-s(\d+|full)-f(\d+|ft|lora\d+)"
    rf"-({'|'.join(LAYERS)})-({'|'.join(INITS)})({_RATIO})?"
)
RUN_PATTERN = rf"{SETTINGS_RUN_PATTERN}({_SEED})?"

TEACHER: str = _NAMES["models"]["teacher"]
ONE_STEP_TEACHER: str = _NAMES["models"]["one_step_teacher"]
PUBLISHED_PREFIX: str = _NAMES["models"]["published_prefix"]
PUBLISHED_PATTERN = rf"{re.escape(PUBLISHED_PREFIX)}[A-Za-z0-9._-]+"
MERGED_PREFIX: str = _NAMES["models"]["merged_prefix"]
MERGED_PATTERN = rf"{re.escape(MERGED_PREFIX)}[A-Za-z0-9._]+({_SEED})?"
RELEASED_PREFIX: str = _NAMES["models"]["released_prefix"]
RELEASED_PATTERN = rf"{re.escape(RELEASED_PREFIX)}[a-z0-9][a-z0-9.-]*"
SWAP_PREFIXES: dict[str, str] = dict(_NAMES["models"]["swap_prefixes"])
SWAPPED_STUDENT_PATTERN = rf"({'|'.join(SWAP_PREFIXES)})-({MERGED_PATTERN}|{RUN_PATTERN})"  # a swapped run/merge
SWAPPED_PUBLISHED_PATTERN = rf"({'|'.join(SWAP_PREFIXES)})-{PUBLISHED_PATTERN}"  # a swapped published checkpoint
SWAPPED_PATTERN = f"{SWAPPED_STUDENT_PATTERN}|{SWAPPED_PUBLISHED_PATTERN}"
MODEL_PATTERN = "|".join(
    (re.escape(TEACHER), re.escape(ONE_STEP_TEACHER), PUBLISHED_PATTERN, MERGED_PATTERN, RUN_PATTERN, SWAPPED_PATTERN)
)

METRIC_FILES: dict[str, str] = dict(_NAMES["metric_files"])
RUN_LEVEL_FILES: tuple[str, ...] = tuple(_NAMES["run_level_files"])
MODEL_LEVEL_FILES: tuple[str, ...] = tuple(_NAMES["model_level_files"])

HPSV2_STYLES: tuple[str, ...] = tuple(_NAMES["hpsv2_styles"])
COCO_COUNTS: dict[str, int] = dict(_NAMES["coco_counts"])


def model_kind(model: str) -> str:
    """What generates a model's images: ``"teacher"`` (multi-step, CFG), ``"teacher-1step"``,
    ``"published"`` (``pub-<name>``, a checkpoint of config/published.yaml), ``"merged"``
    (``merged-<name>``, the weight merge of two runs: ``distill.merges``), ``"run"`` (a distillation
    run's exported student), ``"released"`` (``rel-<name>``, a released one-step model of
    config/released.yaml: its weight analysis only, no images) or ``"swapped"`` (``tnorm-<model>`` /
    ``tdir-<model>``: a run, merge or published checkpoint given its teacher's norms / directions,
    Fig. 2c); one clear error for any other name."""
    if model == TEACHER:
        return "teacher"
    if model == ONE_STEP_TEACHER:
        return "teacher-1step"
    if re.fullmatch(PUBLISHED_PATTERN, model):
        return "published"
    if re.fullmatch(MERGED_PATTERN, model):
        return "merged"
    if re.fullmatch(RUN_PATTERN, model):
        return "run"
    if re.fullmatch(RELEASED_PATTERN, model):
        return "released"
    if re.fullmatch(SWAPPED_PATTERN, model):
        return "swapped"
    raise ValueError(
        f"model {model!r} is none of {TEACHER!r}, {ONE_STEP_TEACHER!r}, '{PUBLISHED_PREFIX}<name>', "
        f"'{MERGED_PREFIX}<name>', '{RELEASED_PREFIX}<name>', 'tnorm-'/'tdir-' + a run, merge or published model, "
        "or a run "
        "name '[{objective}-]{method}-s{rank}-f{fake}-{layers}-{init}' (e.g. 'lorad-s256-f32-linear-zero')."
    )


def run_objective(run: str) -> str:
    """The objective a run name trains with (``dkd.train.objective``): its prefix's, or ``"dkd"``."""
    if model_kind(run) != "run":
        raise ValueError(f"{run!r} is not a run name.")
    prefix = run.split("-", 1)[0]
    return OBJECTIVE_PREFIXES.get(prefix, "dkd")


def published_name(model: str) -> str:
    """``<name>`` of a published model ``pub-<name>`` (its entry in config/published.yaml)."""
    if model_kind(model) != "published":
        raise ValueError(f"{model!r} is not a published model ('{PUBLISHED_PREFIX}<name>').")
    return model[len(PUBLISHED_PREFIX) :]


def released_name(model: str) -> str:
    """``<name>`` of a released model ``rel-<name>`` (its pair in config/released.yaml)."""
    if model_kind(model) != "released":
        raise ValueError(f"{model!r} is not a released model ('{RELEASED_PREFIX}<name>').")
    return model[len(RELEASED_PREFIX) :]


def swapped_parts(model: str) -> tuple[str, str]:
    """``(part, model)`` of a swapped model: ``tnorm-<model>`` -> ("norms", <model>), ``tdir-`` -> "directions"."""
    if model_kind(model) != "swapped":
        raise ValueError(f"{model!r} is not a swapped model ('tnorm-<model>' or 'tdir-<model>').")
    prefix, base = model.split("-", 1)
    return SWAP_PREFIXES[prefix], base


def catalog_model(model: str) -> str | None:
    """The published checkpoint a model is sampled as (``pub-<name>``, or the one a ``tnorm-``/``tdir-``
    model swaps), else None."""
    kind = model_kind(model)
    base = swapped_parts(model)[1] if kind == "swapped" else model
    return base if model_kind(base) == "published" else None


def split_seed(model: str) -> tuple[str, int]:
    """``(model without its seed suffix, K)`` of a run, merge or swapped model ``<model>-seed{K}`` (K = 0:
    the plain name, trained with the settings' seed); other models are ``(model, 0)``."""
    kind = model_kind(model)
    match = re.search(rf"{_SEED}$", model)
    if kind == "swapped":  # of a run or merge (a published checkpoint's name may end like a seed)
        kind = model_kind(swapped_parts(model)[1])
    if match is None or kind not in ("run", "merged"):
        return model, 0
    return model[: match.start()], int(match.group(0)[len(SEED_SUFFIX) + 1 :])


def _has_seeds(model: str) -> bool:
    kind = model_kind(model)
    return kind in ("run", "merged") or (kind == "swapped" and model_kind(swapped_parts(model)[1]) != "published")


def with_seed(model: str, k: int) -> str:
    """The name of ``model`` (a run, merge or swapped model without a seed suffix) trained with its
    settings' seed plus ``k`` (``k`` = 0: ``model`` itself)."""
    base, own = split_seed(model)
    if own:
        raise ValueError(f"{model!r} already names seed {own}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"the seed offset must be a whole number >= 0; got {k!r}.")
    if k and not _has_seeds(model):
        raise ValueError(f"{model!r} is not a run, merge or swapped run or merge: it has no seeds.")
    return model if k == 0 else f"{model}-{SEED_SUFFIX}{k}"


def seeded(models, seeds: int) -> list[str]:
    """Every model of ``models`` at seed offsets ``0 .. seeds - 1`` (runs, merges and swapped models; the
    others once), model by model."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1; got {seeds!r}.")
    names = []
    for model in models:
        varied = _has_seeds(model) and not split_seed(model)[1]
        names += [with_seed(model, k) for k in range(seeds if varied else 1)]
    return names


def run_ratio(run: str) -> tuple[str, int]:
    """``(run without its -g{N} and -seed{K} suffixes, N)`` of a run name (N = 1 without -g)."""
    base, _ = split_seed(run)
    if model_kind(run) != "run":
        raise ValueError(f"{run!r} is not a run name.")
    match = re.search(rf"{_RATIO}$", base)
    return (base, 1) if match is None else (base[: match.start()], int(match.group(1)))


def merge_settings(settings: Mapping, *overrides: Mapping) -> dict:
    """``settings`` with each of ``overrides`` merged in turn, nested mappings key by key (a workflow
    config's ``distill.settings``, then ``distill.objectives.<objective>``, then the run's
    :func:`run_settings_for`); no input changes."""
    merged = dict(settings)
    for override in overrides:
        for key, value in override.items():
            both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
            merged[key] = merge_settings(merged[key], value) if both else value
    return merged


RATIO_FIXED = ("max_steps", "epochs", "generator_every")  # a -g{N} run's are its plain run's, scaled by N


def run_settings_for(run: str, run_settings: Mapping) -> dict:
    """The ``distill.run_settings`` of run ``run``: its plain run's entry (the name without ``-g{N}`` and
    ``-seed{K}``), then, for a ``-g{N}`` run, its own entry merged over it; every seed of a run shares
    them. A ``-g{N}`` entry that sets one of :data:`RATIO_FIXED` is one error: the plain run's length
    times N is the variant's (``dkd.train.run.variant_settings``)."""
    plain, ratio = run_ratio(run)
    own = run_settings.get(split_seed(run)[0]) or {} if ratio > 1 else {}
    fixed = sorted(set(own) & set(RATIO_FIXED))
    if fixed:
        raise ValueError(
            f"distill.run_settings.{split_seed(run)[0]} sets {fixed}: a -{RATIO_SUFFIX}{{N}} run makes N times "
            f"the steps of its plain run; set them in distill.run_settings.{plain}."
        )
    return merge_settings(run_settings.get(plain) or {}, own)


SYNTHETIC_SUBJECTS = tuple(_NAMES["downstream"]["synthetic_subjects"])  # DreamBooth subjects drawn, not fetched
