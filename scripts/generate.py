"""Rule `generate_shard`: one index range of an evaluation set, one seed per image index."""

import dataclasses
import json
import logging

import torch

from dkd.data import read_prompts
from dkd.io import atomic_write_text, rule_log
from dkd.sampling import generate_shard, make_sampler, sampler_fingerprint

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    backbone, model, source = sm.wildcards.backbone, sm.wildcards.model, sm.params.source
    sampler = make_sampler(
        backbone, model, source=source, teacher=sm.params.teacher, dtype=dtype, device=device, catalog=sm.params.catalog
    )
    prompts = read_prompts(sm.input.prompts).prompts
    start, end = sm.params.range
    published = sm.params.catalog is not None  # a published checkpoint, or its swapped denoiser (Fig. 2c)
    settings = dataclasses.asdict(sampler.spec) if published else sm.params.teacher  # the card's
    fingerprint = sampler_fingerprint(
        source, {"sampling": settings, "dtype": str(dtype)}, sm.params.seed, prompts[start:end]
    )
    counts = generate_shard(
        sampler,
        prompts,
        sm.params.images,
        start=start,
        end=end,
        seed=sm.params.seed,
        batch_size=sm.params.batch_size,
        fingerprint=fingerprint,
    )
    logging.info("%s: %s", sm.params.images, counts)
    atomic_write_text(sm.output.marker, json.dumps({**counts, "images": sm.params.images, "seed": sm.params.seed}))
