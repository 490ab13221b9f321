"""A named distillation run end to end, as the workflow's ``distill`` rule and ``python -m dkd distill``
run it: the adapters its name says (``dkd.runs``: ``lorad-s256-f32-linear-zero`` is DKD), the given
settings, training (or resuming) in ``<out>/train`` on one or several processes (``dkd.train.launch``),
then the export to ``<out>/adapter`` and ``<out>/pipeline`` (``dkd.train.export``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

from ..provenance import weights_sha256
from ..runs import RunSpec, parse_run_name
from .config import DistillConfig
from .export import export_student
from .job import Distilled, DistillJob
from .launch import run_distillation

log = logging.getLogger(__name__)

NAMED_BY_RUN = ("backbone", "student", "fake")  # settings the run name and backbone fix


SCALED_BY_RATIO = ("checkpoint_every", "log_every", "eval_every")  # periods kept per generator update by -g{N}


def variant_settings(spec: RunSpec, settings: Mapping) -> dict:
    """``settings`` of the plain run turned into those of its variant ``spec`` (``dkd.runs``): ``-g{N}``
    sets ``generator_every`` N and multiplies ``max_steps`` (or, without it, ``epochs``) and the periods
    :data:`SCALED_BY_RATIO` by N, so that the generator gets as many updates, checkpoints, log lines and
    evaluations as in the plain run (``max_steps`` in ``settings``, e.g. ``--set max_steps=``, is the plain
    run's; the optimisers' warm-ups count each model's own updates, so the student's covers as many
    generator updates at any ratio and the fake's N times fewer); ``-seed{K}`` adds K to ``seed``. A
    ``generator_every`` in the settings of a ``-g{N}`` run is one error (the name says it)."""
    settings = dict(settings)
    defaults = {f.name: f.default for f in fields(DistillConfig)}
    if spec.generator_every > 1:
        if settings.get("generator_every", 1) != 1:
            raise ValueError(
                f"the run name says {spec.generator_every} fake updates per generator update; drop "
                f"generator_every {settings['generator_every']!r} from its settings."
            )
        steps = "max_steps" if settings.get("max_steps", defaults["max_steps"]) is not None else "epochs"
        for key in (steps, *SCALED_BY_RATIO):
            value = settings.get(key, defaults[key])
            if isinstance(value, int) and not isinstance(value, bool):
                settings[key] = value * spec.generator_every
        settings["generator_every"] = spec.generator_every
    if spec.seed_offset:
        seed = settings.get("seed", defaults["seed"])
        if isinstance(seed, int) and not isinstance(seed, bool):  # else one error from DistillConfig
            settings["seed"] = seed + spec.seed_offset
    return settings


def run_config(backbone: str, run: str, settings: Mapping) -> DistillConfig:
    """The ``DistillConfig`` of run ``run`` on ``backbone`` with ``settings`` (``DistillConfig`` fields,
    nested ones as mappings; ``objective`` settings over the hooks of the objective the name says), turned
    into those of the name's variant (:func:`variant_settings`); settings that would contradict the name
    are one error."""
    named = sorted(set(settings) & set(NAMED_BY_RUN))
    if named:
        raise ValueError(f"settings {named} are fixed by the backbone and the run name {run!r}; drop them.")
    spec = parse_run_name(backbone, run)
    settings = variant_settings(spec, settings)
    objective = settings.get("objective") or {}
    if isinstance(objective, Mapping):  # else one error from DistillConfig
        if objective.get("name", spec.objective) != spec.objective:
            raise ValueError(f"run {run!r} trains with objective {spec.objective!r}, not {objective['name']!r}.")
        objective = {**objective, "name": spec.objective}
    data = {**settings, "backbone": backbone, "student": spec.student, "fake": spec.fake}
    return DistillConfig.from_dict({**data, "objective": objective})


def distill_run(
    backbone: str,
    run: str,
    *,
    settings: Mapping,
    source: str,
    dtype: str,
    prompts: str | os.PathLike,
    out: str | os.PathLike,
    processes: int = 1,
    nodes: int = 1,
    cpus: int | None = None,
    curve: dict | None = None,
    scorer: dict | None = None,
) -> Distilled:
    """Train run ``run`` of ``backbone`` (teacher from ``source``: folder or hub id, ``dtype`` on a GPU)
    on the prompt file ``prompts``, resuming from ``<out>/train`` when a checkpoint is there, and export
    it into ``out``; returns the finished run (a finished one is loaded, not trained again). ``processes``
    per node and ``nodes``: see :func:`dkd.train.launch.run_distillation`; ``curve``: the evaluation
    hook's settings (Fig. 16) or None; ``scorer``: the image-text scorer (``dkd.train.scorers.ScorerSpec``
    fields) of an objective with the clamped CLIP loss, else None (ignored)."""
    config = run_config(backbone, run, settings)
    job = DistillJob(
        config=config,
        source=str(source),
        dtype=dtype,
        prompts=str(prompts),
        train_dir=str(Path(out) / "train"),
        curve=curve,
        scorer=scorer if config.objective.scored else None,
    )
    log.info("%s %s on %d process(es) x %d node(s)", backbone, run, processes, nodes)
    done = run_distillation(job, processes=processes, nodes=nodes, cpus=cpus)
    objective = config.objective
    export_student(
        done.result.student,
        config.student,
        done.teacher,
        out,
        t_init=objective.t_init,
        scaled_input=objective.scaled_input,
        objective=objective.name,
        teacher_sha256=weights_sha256(source),
    )
    log.info("exported %s after %d steps (%.3g GPU-days)", out, done.result.steps, done.cost["gpu_days"])
    return done
