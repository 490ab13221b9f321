"""Rule `dreambooth_train`: one subject fine-tuned with one arm's method on the teacher or the DKD student
(dkd.downstream.dreambooth.train: resuming from the checkpoints in `train_dir`), then exported."""

import json
import logging
from pathlib import Path

import torch

from dkd.backbones import load_teacher
from dkd.downstream.dreambooth.data import subject
from dkd.downstream.dreambooth.method import arm_config
from dkd.downstream.dreambooth.train import TrainSettings, export_arm, train_arm
from dkd.io import atomic_folder, rule_log

sm = snakemake  # noqa: F821
train_dir = Path(sm.params.train_dir)  # checkpoints and log.csv, kept whatever becomes of a job
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0), history=train_dir / "train.log"):
    dtype = getattr(torch, sm.params.dtype) if torch.cuda.is_available() else torch.float32
    config = arm_config(sm.params.method, *sm.params.settings)
    item = subject(sm.wildcards.subject)
    base = load_teacher(sm.params.backbone, sm.params.source, dtype=dtype)  # on the CPU: the trainer moves what it uses
    result = train_arm(
        TrainSettings(config, **sm.params.training),
        base,
        Path(sm.input.photos).parent / "photos",
        Path(sm.input.classes).parent / "images",
        train_dir,
        prompts=(item.instance_prompt, item.class_prompt),
    )
    with atomic_folder(Path(sm.output.arm).parent) as folder:
        record = {"subject": item.name, "arm": sm.wildcards.arm, "base": str(sm.params.source)}
        prompts = [item.instance_prompt, item.class_prompt]
        export_arm(result, config, folder, **record, prompts=prompts, cost=result.cost, attempts=result.attempts)
    logging.info("%s %s: %d steps, %d trainable parameters; %s", item.name, sm.wildcards.arm, result.steps,
                 result.trainable, json.dumps(result.cost))  # fmt: skip
