"""Rule `reversion_timing`: seconds per image of the one-step student or of the teacher with a relation's
learned token loaded, at batch 1, text encoder and VAE decoder included (dkd.metrics.timing.time_pipeline:
the median of the timed calls after warm-up), on the first prompt of that relation."""

import json
import logging

import torch

from dkd.downstream.reversion.relations import embedding_token, image_prompts, load_relation_into, load_templates
from dkd.io import atomic_write_text, rule_log
from dkd.metrics.timing import time_pipeline
from dkd.sampling import make_sampler

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    relation, (name, source), timing = sm.params.relation, sm.params.model, sm.params.timing
    templates = load_templates(sm.params.templates, relation)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    sampler = make_sampler(sm.params.backbone, name, source=source, teacher=sm.params.teacher, dtype=dtype,
                           device=device)  # fmt: skip
    load_relation_into(sampler, sm.input.embedding)
    prompt = image_prompts(templates, embedding_token(sm.input.embedding), count=1)[0]
    result = time_pipeline(sampler, prompt, seed=sm.params.seed, warmup=timing["warmup"],
                           repeats=timing["repeats"], progress=True)  # fmt: skip
    teacher = sm.params.teacher or {}
    summary = {
        "model": sm.wildcards.rv_model,
        "relation": relation,
        "source": str(source),
        "seconds": result["median_s"],
        "nfe": teacher.get("steps", 1),
        "guidance_scale": teacher.get("guidance_scale", 1.0),
        "dtype": str(dtype).removeprefix("torch."),
        **result,
    }
    atomic_write_text(sm.output.result, json.dumps(summary, indent=2) + "\n")
    logging.info("%s: %.4f s per image on %s", sm.wildcards.rv_model, result["median_s"], result["device"])
