"""Rule `distill`: one distillation run (resuming from its checkpoints), then the export, the
parameter counts, the training cost and, for the runs with convergence curves, the evaluation
hook's log. A job given several GPUs (resource `gpus`) trains on as many processes (accelerate),
on each of its `nodes` (one srun task per node); this process alone then loads the finished run
and writes the outputs (dkd.train.run)."""

import json
from pathlib import Path

import torch

from dkd.io import atomic_write_text, rule_log
from dkd.params import run_parameter_counts
from dkd.provenance import weights_sha256
from dkd.report.results import write_result
from dkd.sampling.pipeline import student_info
from dkd.train.run import distill_run
from dkd.vocabulary import merge_settings

sm = snakemake  # noqa: F821
backbone, run, curve = sm.wildcards.backbone, sm.wildcards.run, sm.params.curve
run_dir = Path(sm.output.pipeline).parent.parent
train_dir = run_dir / "train"  # checkpoints and logs (dkd.train.run), kept whatever becomes of a job
gpus, nodes = int(sm.resources.get("gpus", 0)), int(sm.resources.get("nodes", 1))
with rule_log(sm.log[0], sm.threads, gpus=gpus, history=train_dir / "distill.log"):
    # distill.settings, then distill.objectives.<the run's objective>, then distill.run_settings.<run> (its
    # plain run's, then its -g{N} run's); the name's variant is applied by distill_run
    settings = merge_settings(sm.params.settings, sm.params.objective_settings, sm.params.run_settings)
    settings["eval_every"] = curve["every"] if curve else None
    done = distill_run(
        backbone,
        run,
        settings=settings,
        source=sm.params.source,
        dtype=sm.params.dtype,
        prompts=sm.input.prompts,
        out=run_dir,
        curve=curve,
        scorer=json.loads(Path(scorer).read_text()) if isinstance(scorer := sm.params.scorer, str) else scorer,
        nodes=nodes,
        cpus=sm.threads,
        processes=gpus if torch.cuda.is_available() and gpus > 1 else 1,
    )
    student, fake = done.config.student, done.config.fake  # parsed from the run name by distill_run
    write_result(
        sm.output.params,
        backbone=backbone,
        model=run,
        evalset=None,
        values=run_parameter_counts(student, fake),
        provenance={"student": repr(student), "fake": repr(fake)},
    )
    write_result(
        sm.output.train,
        backbone=backbone,
        model=run,
        evalset=None,
        values={**done.cost, **done.config.updates(done.cost["steps"])},
        provenance={
            "devices": [a["device"] for a in done.attempts],
            "attempts": done.attempts,
            "teacher_sha256": student_info(run_dir / "pipeline").get("teacher_sha256"),
            "student_sha256": weights_sha256(run_dir / "pipeline"),
        },
    )
    atomic_write_text(sm.output.curve, (train_dir / "curve.csv").read_text() if curve else "step\n")
