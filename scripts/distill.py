"""Rule `distill`: one distillation run (resuming from its checkpoints), then the export, the
parameter counts, the training cost and, for the runs with convergence curves, the evaluation
hook's log. A job given several GPUs (resource `gpus`) trains on as many processes (accelerate),
on each of its `nodes` (one srun task per node); this process alone then loads the finished run
and writes the outputs."""

import logging
from pathlib import Path

import torch

from dkd.io import atomic_write_text, rule_log
from dkd.params import run_parameter_counts
from dkd.report.results import write_result
from dkd.runs import parse_run_name
from dkd.train.config import DistillConfig
from dkd.train.export import export_student
from dkd.train.launch import DistillJob, run_distillation

sm = snakemake  # noqa: F821
backbone, run, curve = sm.wildcards.backbone, sm.wildcards.run, sm.params.curve
run_dir, train_dir = Path(sm.output.pipeline).parent.parent, Path(sm.params.train_dir)
gpus, nodes = int(sm.resources.get("gpus", 0)), int(sm.resources.get("nodes", 1))
with rule_log(sm.log[0], sm.threads, gpus=gpus, history=train_dir / "distill.log"):
    student, fake = parse_run_name(backbone, run)
    settings = {**sm.params.settings, "eval_every": curve["every"] if curve else None}
    config = DistillConfig.from_dict({**settings, "backbone": backbone, "student": student, "fake": fake})
    processes = gpus if torch.cuda.is_available() and gpus > 1 else 1
    job = DistillJob(config=config, source=sm.params.source, dtype=sm.params.dtype, prompts=sm.input.prompts,
                     train_dir=str(train_dir), curve=curve)
    logging.info("%s %s on %d process(es) x %d node(s)", backbone, run, processes, nodes)
    done = run_distillation(job, processes=processes, nodes=nodes, cpus=sm.threads)
    export_student(done.result.student, config.student, done.teacher, run_dir, t_init=config.vsd.t_init)
    write_result(sm.output.params, backbone=backbone, model=run, evalset=None,
                 values=run_parameter_counts(student, fake), provenance={"student": repr(student), "fake": repr(fake)})
    write_result(sm.output.train, backbone=backbone, model=run, evalset=None, values=done.cost,
                 provenance={"devices": [a["device"] for a in done.attempts], "attempts": done.attempts})
    atomic_write_text(sm.output.curve, (train_dir / "curve.csv").read_text() if curve else "step\n")
    logging.info("exported %s after %d steps (%.3g GPU-days)", run_dir, done.result.steps, done.cost["gpu_days"])
