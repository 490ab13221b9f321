"""Rule `dreambooth`: the target's summary.json (tables of every arm, numbers read back from the metric and
arm files) and a grid per subject."""

import logging

from dkd.downstream.dreambooth.evaluate import write_dreambooth_summary
from dkd.io import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    write_dreambooth_summary(
        sm.output.summary,
        subjects=sm.params.subjects,
        arms=sm.params.arms,
        metric_files=sm.input.metrics,
        arm_files=sm.input.arms,
        image_files=sm.input.images,
        photo_files=sm.input.photos,
        grid_prompts=sm.params.grid_prompts,
        images_per_prompt=sm.params.images_per_prompt,
    )
    logging.info("wrote %s", sm.output.summary)
