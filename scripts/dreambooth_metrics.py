"""Rule `dreambooth_metrics`: DINO, CLIP-I and CLIP-T of every arm of a subject (dkd.metrics.subject)."""

import json
import logging
from pathlib import Path

import torch

from dkd.downstream.dreambooth.evaluate import read_json, score_arm
from dkd.io import atomic_write_text, rule_log
from dkd.metrics.subject import load_dino, load_subject_clip

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = sm.params.models
    dino = load_dino(models["dino"]["source"], models["dino"].get("revision"), device=device)
    clip = load_subject_clip(models["clip"]["source"], models["clip"].get("revision"), device=device)
    photos = [Path(sm.input.photos).parent / "photos" / name for name in read_json(sm.input.photos)["photos"]]
    for arm, images_file, out in zip(sm.params.arms, sm.input.images, sm.output.metrics):
        records = read_json(images_file)["images"]
        images = [Path(images_file).parent / "images" / r["file"] for r in records]
        values = score_arm(images, [r["text"] for r in records], photos, dino=dino, clip=clip,
                           batch_size=sm.params.batch_size)  # fmt: skip
        record = {"subject": sm.wildcards.subject, "arm": arm, "values": values, "models": models}
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
        logging.info("%s %s: %s", sm.wildcards.subject, arm, json.dumps(values))
