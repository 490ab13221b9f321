"""Rules `reference_stats`, `features_metrics` (FID and precision/recall from one pass over the
features) and `clip`: result files of one model on one evaluation set (``dkd.evaluators``)."""

import json
import logging

import torch

from dkd import evaluators
from dkd.data import read_prompts
from dkd.io import rule_log
from dkd.report.results import write_result

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    evaluator = evaluators.Evaluator(**sm.params.evaluator, device="cuda" if torch.cuda.is_available() else "cpu")
    if sm.rule == "reference_stats":
        info = evaluators.reference(evaluator, sm.params.reference, stats=sm.output.stats,
                                    features=sm.output.features, scratch=sm.params.scratch)
        logging.info("reference %s: %s", sm.wildcards.evalset, info)
    else:
        keys = dict(backbone=sm.wildcards.backbone, model=sm.wildcards.model, evalset=sm.wildcards.evalset)
        if sm.rule == "clip":
            prompts = read_prompts(sm.input.prompts).prompts[: sm.params.size]
            outputs = {sm.output.result: evaluators.text_image(evaluator, sm.params.images, prompts)}
        else:
            outputs = evaluators.image_metrics(evaluator, sm.params.images, stats=sm.input.stats,
                                               features=sm.input.features, scratch=sm.params.scratch)
            outputs = {sm.output.fid: outputs["fid"], sm.output.pr: outputs["pr"]}
        for path, (values, provenance) in outputs.items():
            write_result(path, **keys, values=values, provenance={**provenance, "images": sm.params.images})
            logging.info("%s: %s", path, json.dumps(values))
