"""Rule `controlnet_f1`: the canny F1 of one model's images against a canny control's condition edges."""

import json
import logging

from dkd.downstream.controlnet.run import TargetControl, TargetSettings, canny_f1_scores, read_images
from dkd.io import atomic_write_text, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    control = TargetControl.from_config(sm.wildcards.control, sm.params.control)
    settings = TargetSettings.from_config(sm.params.settings)
    folder, records = read_images(sm.input.images)
    files = [folder / record["file"] for record in records]
    scores = canny_f1_scores(sm.input.condition, files, control.spec.canny_thresholds, settings.f1_tolerance)
    scores["images"] = [record["file"] for record in records]
    atomic_write_text(sm.output.f1, json.dumps(scores, indent=2))
    logging.info("%s/%s: canny F1 %.4f", control.spec.kind, sm.wildcards.model, scores["mean"])
