"""Rule `scalecrafter`: the target's grids (one per resolution, rows = arms), table.csv and summary.json,
every number read back from the arms' images.json (dkd.downstream.scalecrafter.compare.write_comparison)."""

from dkd.downstream.scalecrafter.compare import write_comparison
from dkd.io import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    write_comparison(
        sm.input.arms,
        sm.output.grids,
        sm.output.table,
        sm.output.summary,
        backbone=sm.params.backbone,
        student=sm.params.student,
    )
