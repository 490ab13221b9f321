"""Rule `generate_shard`: one index range of an evaluation set, one seed per image index."""

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import torch

from dkd.data import read_prompts
from dkd.generate import DiffusersSampler, MultiStepSpec, generate_shard
from dkd.io import atomic_write_text
from dkd.pipeline import OneStepPipeline

sm = snakemake  # noqa: F821
with open(sm.log[0], "a") as log, contextlib.redirect_stderr(log):
    logging.basicConfig(stream=log, level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if sm.params.teacher is not None:
        sampler = DiffusersSampler(MultiStepSpec(**sm.params.teacher), device=device)
    else:
        sampler = OneStepPipeline.from_pretrained(Path(sm.input.student).parent, device=device)
    prompts = read_prompts(sm.input.prompts).prompts
    start, end = sm.params.range
    # The sampler's identity: its weight files (size, mtime), settings, seed and prompts.
    model_folder = Path(sm.input.student).parent if sm.params.teacher is None else Path(sm.params.teacher["source"])
    files = sorted((str(p.relative_to(model_folder)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in model_folder.rglob("*") if p.is_file()) if model_folder.is_dir() else str(model_folder)
    identity = json.dumps([files, sm.params.teacher, sm.params.seed, prompts[start:end]], default=str)
    counts = generate_shard(sampler, prompts, sm.params.images, start=start, end=end, seed=sm.params.seed,
                            batch_size=sm.params.batch_size, fingerprint=hashlib.sha256(identity.encode()).hexdigest())
    logging.info("%s: %s", sm.params.images, counts)
    atomic_write_text(sm.output.marker, json.dumps({**counts, "images": sm.params.images, "seed": sm.params.seed}))
