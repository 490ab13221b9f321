"""Rule `scalecrafter_images`: one arm of the ScaleCrafter comparison at one resolution: the image of every
prompt x seed, the U-Net evaluations per image and the seconds per image at batch 1
(dkd.downstream.scalecrafter.compare)."""

import json
import logging

import torch

from dkd.downstream.scalecrafter.compare import arm_sampler, generate_arm
from dkd.io import atomic_folder, atomic_write_text, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    arm, resolution, schedule, teacher = (
        sm.wildcards.arm,
        sm.wildcards.resolution,
        sm.params.schedule,
        sm.params.teacher,
    )
    sampler, spec, steps = arm_sampler(
        arm,
        resolution,
        source=sm.params.source,
        backbone=sm.params.backbone,
        schedule=schedule,
        teacher=teacher,
        freeu=sm.params.freeu,
        dtype=dtype,
        device=device,
    )
    with atomic_folder(sm.output.images) as folder:
        made = generate_arm(
            sampler,
            sm.params.prompts,
            sm.params.seeds,
            folder,
            batch_size=sm.params.batch_size,
            timing=sm.params.timing,
        )
    record = {
        "resolution": resolution,
        "arm": arm,
        "steps": steps,
        **made,
        "spec": {
            "height": spec.height,
            "width": spec.width,
            "redilate": spec.redilate,
            "freeu": dict(spec.freeu_factors or {}),
        },
        "teacher": {**teacher, **schedule} if arm.startswith("teacher") else None,
        "source": sm.params.source,
        "dtype": str(dtype),
    }
    atomic_write_text(sm.output.info, json.dumps(record, indent=2) + "\n")
    logging.info("%s %s: %s s/image, %s U-Net evaluations/image", resolution, arm,
                 record["seconds_per_image"], record["unet_evaluations_per_image"])  # fmt: skip
