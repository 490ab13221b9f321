"""Rule `distill`: one distillation run (resuming from its checkpoints), then the export."""

import contextlib
import logging
import shutil
from pathlib import Path

import torch

from dkd.backbones import load_teacher
from dkd.data import read_prompts
from dkd.runs import parse_run_name
from dkd.train.config import DistillConfig
from dkd.train.export import export_student
from dkd.train.loop import distill

sm = snakemake  # noqa: F821
backbone, run = sm.wildcards.backbone, sm.wildcards.run
run_dir = Path(sm.output.pipeline).parent.parent
with open(sm.log[0], "a") as log, contextlib.redirect_stderr(log):
    logging.basicConfig(stream=log, level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    student, fake = parse_run_name(backbone, run)
    config = DistillConfig.from_dict({**sm.params.settings, "backbone": backbone, "student": student, "fake": fake})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    teacher = load_teacher(backbone, sm.params.source, dtype=dtype, device=device)
    prompts = read_prompts(sm.input.prompts)
    logging.info("%s %s: %d prompts (%d empty lines skipped), %s", backbone, run, len(prompts),
                 prompts.skipped_empty, config)
    result = distill(config, teacher, prompts.prompts, sm.params.train_dir)
    tmp = run_dir / "export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    export_student(result.student, config.student, teacher, tmp, t_init=config.vsd.t_init)
    for part in ("adapter", "pipeline"):
        if (tmp / part).exists():
            shutil.rmtree(run_dir / part, ignore_errors=True)
            (tmp / part).rename(run_dir / part)
    shutil.rmtree(tmp)
    logging.info("exported %s after %d steps", run_dir, result.steps)
