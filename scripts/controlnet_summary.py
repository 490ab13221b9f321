"""Rule `controlnet`: the target's grids (one per control) and summary.json (dkd.report.downstream)."""

import logging

from dkd.downstream.controlnet.summary import write_controlnet_summary
from dkd.io import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    summary = write_controlnet_summary(
        sm.output.summary, sm.params.files, dict(zip(sm.params.controls, sm.output.grids))
    )
    logging.info("wrote %s: %d rows, %d grids", sm.output.summary, len(summary.tables[0].rows), len(summary.figures))
