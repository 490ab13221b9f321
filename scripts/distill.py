"""Rule `distill`: one distillation run (resuming from its checkpoints), then the export, the
parameter counts and, for the runs with convergence curves, the evaluation hook's log."""

import logging
from pathlib import Path

import torch

from dkd.backbones import load_teacher
from dkd.data import read_prompts
from dkd.evaluators import Evaluator, training_curve
from dkd.io import atomic_write_text, rule_log
from dkd.params import run_parameter_counts
from dkd.report.results import write_result
from dkd.runs import parse_run_name
from dkd.train.config import DistillConfig
from dkd.train.export import export_student
from dkd.train.loop import distill

sm = snakemake  # noqa: F821
backbone, run, curve = sm.wildcards.backbone, sm.wildcards.run, sm.params.curve
run_dir, train_dir = Path(sm.output.pipeline).parent.parent, Path(sm.params.train_dir)
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    student, fake = parse_run_name(backbone, run)
    settings = {**sm.params.settings, "eval_every": curve["every"] if curve else None}
    config = DistillConfig.from_dict({**settings, "backbone": backbone, "student": student, "fake": fake})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    teacher = load_teacher(backbone, sm.params.source, dtype=dtype, device=device)
    prompts = read_prompts(sm.input.prompts)
    logging.info("%s %s: %d prompts (%d empty lines skipped), %s", backbone, run, len(prompts),
                 prompts.skipped_empty, config)
    evaluate = training_curve(
        Evaluator(**curve["evaluator"], device=device), teacher, prompts=read_prompts(curve["prompts"]).prompts[
            : curve["count"]], seed=curve["seed"], folder=train_dir / "curve-images", stats=curve["stats"],
        features=curve["features"], t_init=config.vsd.t_init) if curve else None
    result = distill(config, teacher, prompts.prompts, train_dir, evaluate=evaluate)
    export_student(result.student, config.student, teacher, run_dir, t_init=config.vsd.t_init)
    write_result(sm.output.params, backbone=backbone, model=run, evalset=None,
                 values=run_parameter_counts(student, fake), provenance={"student": repr(student), "fake": repr(fake)})
    atomic_write_text(sm.output.curve, (train_dir / "curve.csv").read_text() if curve else "step\n")
    logging.info("exported %s after %d steps", run_dir, result.steps)
