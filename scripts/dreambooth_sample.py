"""Rule `dreambooth_sample`: an arm's images of the subject's evaluation prompts (the same seeds in every arm;
teacher arms: the multi-step sampler, dkd-<method>: the student's one step)."""

import json
import logging
from pathlib import Path

import torch

from dkd.downstream.dreambooth.data import evaluation_prompts, subject
from dkd.downstream.dreambooth.evaluate import load_arm_sampler, sample_arm
from dkd.io import atomic_folder, atomic_write_text, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    one_step, sampling = bool(sm.params.one_step), dict(sm.params.sampling)
    sampler = load_arm_sampler(sm.params.backbone, sm.params.source, Path(sm.input.arm).parent, one_step=one_step,
                               sampling=sampling, dtype=dtype, device=device)  # fmt: skip
    prompts = evaluation_prompts(subject(sm.wildcards.subject), sm.params.prompts)
    settings = {"images_per_prompt": sm.params.images_per_prompt, "seed": sm.params.seed}
    with atomic_folder(sm.output.images) as folder:
        records = sample_arm(sampler, prompts, folder, batch_size=sm.params.batch_size, **settings)
    how = {"one_step": True, "t_init": sampler.t_init, "scaled_input": sampler.scaled_input} if one_step else {
        "one_step": False, **sampling}  # fmt: skip
    record = {"subject": sm.wildcards.subject, "arm": sm.wildcards.arm, "sampler": how, **settings, "images": records}
    atomic_write_text(sm.output.info, json.dumps(record, indent=2) + "\n")
    logging.info("%s: %d images", sm.output.images, len(records))
