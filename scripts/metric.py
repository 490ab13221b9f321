"""Rules `reference_stats`, `features_metrics` (FID and precision/recall from one pass over the
features), `text_image` (CLIP score, or the toy's digit probability) and `hps` (over the HPSv2
style sets): result files of one model (``dkd.evaluators``)."""

import json
import logging
from pathlib import Path

import torch

from dkd import evaluators
from dkd.data import check_reference_mode, read_prompts
from dkd.io import rule_log
from dkd.report.results import write_result

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    if sm.rule == "reference_stats" and sm.params.reference_mode:  # a COCO set folder made by hand with
        check_reference_mode(Path(sm.params.reference).parent, sm.params.reference_mode)  # another mode: refused
    evaluator = evaluators.Evaluator(**sm.params.evaluator, device="cuda" if torch.cuda.is_available() else "cpu")
    if sm.rule == "reference_stats":
        info = evaluators.reference(
            evaluator,
            sm.params.reference,
            stats=sm.output.stats,
            features=sm.output.features,
            scratch=sm.params.scratch,
        )
        logging.info("reference %s: %s", sm.wildcards.evalset, info)
    else:
        keys = dict(
            backbone=sm.wildcards.backbone, model=sm.wildcards.model, evalset=sm.wildcards.get("evalset", "hpsv2")
        )
        if sm.rule == "hps":
            styles = {
                style: (folder, read_prompts(prompts).prompts[:count])
                for style, (folder, prompts, count) in sm.params.styles.items()
            }
            outputs = {
                sm.output.result: evaluators.hps(
                    evaluator, styles, version=sm.params.version, checkpoint=sm.params.checkpoint
                )
            }
        elif sm.rule == "text_image":
            prompts = read_prompts(sm.input.prompts).prompts[: sm.params.size]
            outputs = {sm.output.result: evaluators.text_image(evaluator, sm.params.images, prompts)}
        else:
            outputs = evaluators.image_metrics(
                evaluator,
                sm.params.images,
                stats=sm.input.stats,
                features=sm.input.features,
                scratch=sm.params.scratch,
                bootstrap=sm.params.bootstrap,
            )
            outputs = {sm.output.fid: outputs["fid"], sm.output.pr: outputs["pr"]}
        images = json.loads(Path(sm.input.images if sm.rule != "hps" else sm.input.images[0]).read_text())
        weights = {key: images.get(key) for key in ("model_sha256", "teacher_sha256")}  # the model's (generate)
        weights["evaluator_sha256"] = evaluator.weights_sha256("features" if sm.rule == "features_metrics" else "")
        for path, (values, provenance) in outputs.items():
            provenance = {"images": sm.params.get("images"), **weights, **provenance}
            write_result(path, **keys, values=values, provenance=provenance)
            logging.info("%s: %s", path, json.dumps(values))
