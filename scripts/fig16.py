"""Rule `fig16`: the convergence curves of the runs listed under distill.curves.

The curves of a run trained with several seeds (``<run>``, ``<run>-seed1``, ...) are one label
``<backbone>/<run>``, drawn as their mean with a band over the seeds; ``table`` holds the numbers. The x
axis counts generator updates: a ``-g{N}`` run's steps divided by N (its evaluations fall on multiples of N).
"""

import logging
from pathlib import Path

from dkd.io import rule_log
from dkd.report.curves import plot_curves, read_curve, write_curve_summary
from dkd.vocabulary import run_ratio, split_seed

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    seeds: dict[str, list[tuple[int, str]]] = {}  # <backbone>/<base run> -> [(K, path)], in input order
    for path in sm.input.curves:
        base, k = split_seed(Path(path).parent.name)
        seeds.setdefault(f"{Path(path).parent.parent.name}/{base}", []).append((k, path))

    def updates(path):  # the curve against generator updates
        frame, ratio = read_curve(path), run_ratio(Path(path).parent.name)[1]
        return frame.assign(step=frame["step"] // ratio)

    curves = {label: [updates(path) for _, path in sorted(paths)] for label, paths in seeds.items()}
    plot_curves(curves, sm.params.metrics, sm.output.plot, title="Fig. 16: convergence of the one-step students")
    write_curve_summary(curves, sm.output.table)
    logging.info("plotted %s", {label: len(frames) for label, frames in sorted(curves.items())})
