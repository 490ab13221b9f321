"""Rule `dreambooth_class_images`: the teacher's images of a class prompt (prior preservation), as many as
the arms' largest `class_images`, shared by every arm of every subject of the class."""

import json
import logging

import torch

from dkd.backbones import load_teacher
from dkd.downstream.dreambooth.evaluate import generate_class_images
from dkd.downstream.dreambooth.method import arm_config, class_prompt
from dkd.io import atomic_folder, atomic_write_text, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    count = max(arm_config(method, *settings).class_images for method, settings in sm.params.methods.items())
    prompt = class_prompt(sm.params.name)
    teacher = load_teacher(sm.params.backbone, sm.params.source, dtype=dtype, device=device)
    kwargs = {"sampling": sm.params.sampling, "seed": sm.params.seed, "batch_size": sm.params.batch_size}
    with atomic_folder(sm.output.images) as folder:
        paths = generate_class_images(teacher, prompt, count, folder, **kwargs)
    record = {"class": sm.params.name, "prompt": prompt, "images": [p.name for p in paths], **kwargs}
    atomic_write_text(sm.output.info, json.dumps(record, indent=2) + "\n")
    logging.info("%s: %d images of %r", sm.output.images, count, prompt)
