"""``python -m dkd distill RUN --backbone B --prompts FILE --out DIR``: one distillation run without the
workflow (``dkd.train.run``), e.g. DKD on SD1.5 with the paper's settings::

    python -m dkd distill lorad-s256-f32-linear-zero --backbone sd15 --config config/config.yaml \\
        --prompts data/journeydb/prompts.txt --out runs/sd15-dkd --processes 8

``--nodes M`` (inside a SLURM allocation of M nodes, one task each) trains on ``--processes`` GPUs of
each node (``dkd.train.nodes``: one ``srun`` task per node).

Settings come from ``--config`` (a workflow config: its ``distill.settings``, with
``distill.run_settings.<RUN>`` over them, and ``backbones.<B>`` source and dtype; or a YAML mapping
of ``DistillConfig`` fields), then ``--set KEY=VALUE``; unset ones keep ``DistillConfig``'s defaults
(paper 4.1, F.1). The same command again resumes from the newest checkpoint in ``DIR/train`` (after
SIGTERM/SIGUSR1 it exits with code 75 once that is written); a finished run is only exported again.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml


def _problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(error, 'problem', None) or str(error).splitlines()[0]}{where}"


def read_settings(path: str | None, backbone: str, run: str) -> tuple[dict, dict]:
    """``(settings, backbone entry)`` from a YAML file: a workflow config (``distill.settings`` with
    ``distill.objectives.<the run's objective>`` and ``distill.run_settings.<run>`` merged in, and
    ``backbones.<backbone>``) or a plain mapping of settings; ``({}, {})`` without a file."""
    from ..runs import parse_run_name
    from ..vocabulary import merge_settings, run_settings_for

    if path is None:
        return {}, {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise FileNotFoundError(f"--config {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ValueError(f"--config {path}: not valid YAML ({_problem(error)})") from error
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping, got {type(data).__name__}")
    if "distill" not in data:
        return data, {}
    distill = data["distill"] or {}
    settings, objective = distill.get("settings") or {}, parse_run_name(backbone, run).objective
    per_objective = (distill.get("objectives") or {}).get(objective) or {}
    entry = (data.get("backbones") or {}).get(backbone) or {}
    run_settings = distill.get("run_settings") or {}
    if not all(isinstance(part, dict) for part in (settings, per_objective, run_settings, entry)):
        raise ValueError(
            f"--config {path}: distill.settings, distill.objectives.{objective}, distill.run_settings and "
            f"backbones.{backbone} must be mappings"
        )
    per_run = run_settings_for(run, run_settings)  # its plain run's, then its -g{N} run's
    return merge_settings(settings, per_objective, per_run), dict(entry)


def apply_overrides(settings: dict, items: list[str]) -> dict:
    """``settings`` with each ``KEY=VALUE`` of ``items`` set (VALUE read as YAML: 3, 1.0e-4, true,
    [a, b]); a dotted KEY reaches into a nested setting (``objective.guidance_scale=2.0``)."""
    result = copy.deepcopy(settings)
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. max_steps=1000 or objective.guidance_scale=2.0")
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {part!r} is not a nested setting")
        node[leaf] = _value(text)
    return result


def _value(text: str):
    """A --set value: a number where it reads as one (YAML 1.1 would keep 3e-4 as text), true/false,
    null, a YAML list or mapping (``[a, b]``), else the text itself (``no`` stays "no", not YAML's False)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    words = {"true": True, "false": False, "null": None}
    if text.lower() in words:
        return words[text.lower()]
    if not text.startswith(("[", "{")):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"--set value {text!r} is not a valid YAML list or mapping ({_problem(error)})") from None


def teacher_source(backbone: str, source: str | None, entry: dict) -> str:
    """--source, else the config's ``backbones.<B>.source``, else the backbone's hub id."""
    from ..backbones.specs import backbone_spec

    found = source or entry.get("source") or backbone_spec(backbone).hub_id
    if not found:
        raise ValueError(f"backbone {backbone!r} exists only as a local folder: give --source FOLDER")
    return found


def _distill(args: argparse.Namespace) -> int:
    import logging

    from ..io import LockedError
    from .launch import INTERRUPTED_EXIT, LaunchError
    from .loop import NonFiniteLossError, TrainingInterrupted
    from .run import distill_run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # resume and export lines
    try:
        settings, entry = read_settings(args.config, args.backbone, args.name)
        settings = apply_overrides(settings, args.set)
        if not Path(args.prompts).is_file():
            raise FileNotFoundError(f"--prompts {args.prompts}: no such file")
        source = teacher_source(args.backbone, args.source, entry)
        done = distill_run(
            args.backbone,
            args.name,
            settings=settings,
            source=source,
            dtype=args.dtype or entry.get("dtype", "float32"),
            prompts=args.prompts,
            out=args.out,
            processes=args.processes,
            nodes=args.nodes,
        )
    except TrainingInterrupted as stopped:
        print(f"stopped: {stopped}; the same command again resumes", file=sys.stderr)
        return INTERRUPTED_EXIT
    except (FileNotFoundError, ValueError, NonFiniteLossError, LaunchError, LockedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, (FileNotFoundError, ValueError)) else 1
    print(json.dumps({"out": str(args.out), "steps": done.result.steps, **done.cost}))
    return 0


def add_subcommand(commands) -> None:
    """``distill`` on the top-level subparsers of ``python -m dkd``."""
    from .job import DTYPES

    parser = commands.add_parser(
        "distill",
        help="one distillation run (DKD or a baseline), resumable, then "
        "its export: DIR/adapter, DIR/pipeline (python -m dkd sample)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "name",
        metavar="RUN",
        help="{method}-s{rank}-f{fake}-{layers}-{init}: lorad-s256-f32-"
        "linear-zero is DKD; lora-/dora-s256-f32-linear-zero, ft-sfull-fft-linear-zero (DMD2)",
    )
    parser.add_argument(
        "--backbone", required=True, help="sd15, sd21, pixart256 (or tiny-sd, tiny-pixart, toy with --source)"
    )
    parser.add_argument("--prompts", required=True, help="training prompts: .txt (one per line) or .jsonl")
    parser.add_argument("--out", required=True, help="run folder: train/ (checkpoints, log.csv), adapter/, pipeline/")
    parser.add_argument(
        "--config",
        default=None,
        help="YAML: a workflow config (distill.settings, "
        "backbones.<B>.source/dtype) or a mapping of DistillConfig fields",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting after --config (YAML value; repeatable), e.g. max_steps=1000, "
        "objective.guidance_scale=2.0, optim_student.lr=5e-5",
    )
    parser.add_argument(
        "--source",
        default=None,
        help="teacher: local diffusers folder or hub id (default: the config's, else the backbone's hub id)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="frozen teacher's precision on a GPU (default: the config's, else float32, as the workflow)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="data-parallel processes per machine, one per GPU (accelerate launch)"
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="machines of this SLURM allocation to train on, one srun task each (e.g. inside "
        "sbatch --nodes=2 --ntasks-per-node=1 --gres=gpu:8)",
    )
    parser.set_defaults(run=_distill)
