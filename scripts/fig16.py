"""Rule `fig16`: the convergence curves of the runs listed under distill.curves."""

import logging
from pathlib import Path

from dkd.io import rule_log
from dkd.report.curves import plot_curves, read_curve

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    curves = {f"{Path(path).parent.parent.name}/{Path(path).parent.name}": read_curve(path) for path in sm.input.curves}
    plot_curves(curves, sm.params.metrics, sm.output.plot, title="Fig. 16: convergence of the one-step students")
    logging.info("plotted %s", sorted(curves))
