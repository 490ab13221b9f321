"""Rule `controlnet_condition`: a control's condition image (its source squared to the resolution, then
its annotator: canny, or none)."""

import logging

from dkd.downstream.controlnet.run import TargetControl, TargetSettings, load_source_image, make_condition
from dkd.io import atomic_open, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    control = TargetControl.from_config(sm.wildcards.control, sm.params.control)
    settings = TargetSettings.from_config(sm.params.settings)
    source = load_source_image(sm.params.image, control.spec.revision, control.spec.controlnet)
    condition = make_condition(source, control, settings.resolution)
    with atomic_open(sm.output.condition, "wb") as handle:
        condition.save(handle, format="PNG")
    logging.info("%s: %s (%s) -> %s", control.spec.kind, sm.params.image, control.annotator, sm.output.condition)
