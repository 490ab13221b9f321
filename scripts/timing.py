"""Rule `timing`: seconds per image of one model at batch 1, text encoder and decoder included
(Table 5; dkd.metrics.timing.time_pipeline, median of the timed calls after warm-up)."""

import logging

import torch

from dkd.io import rule_log
from dkd.metrics.timing import time_pipeline
from dkd.report.results import write_result
from dkd.sampling import make_sampler

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    backbone, model, settings = sm.wildcards.backbone, sm.wildcards.model, dict(sm.params.settings)
    sampler = make_sampler(
        backbone,
        model,
        source=sm.params.source,
        teacher=sm.params.teacher,
        dtype=dtype,
        device=device,
        catalog=sm.params.catalog,
    )
    result = time_pipeline(sampler, settings.pop("prompt"), progress=True, **settings)
    write_result(
        sm.output.result,
        backbone=backbone,
        model=model,
        evalset=None,
        values={"inference_s": result.pop("median_s")},
        provenance={**result, "source": sm.params.source},
    )
    logging.info("%s/%s: %s", backbone, model, result)
