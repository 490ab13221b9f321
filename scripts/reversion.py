"""Rule `reversion`: the target's grids (per relation, the teacher's images above the one-step student's)
and summary.json, its tables read from the files the other reversion rules wrote
(dkd.downstream.reversion.summary)."""

import json
import logging
from pathlib import Path

from dkd.downstream.reversion.summary import relation_grid, reversion_summary
from dkd.io import rule_log
from dkd.report.downstream import write_summary

sm = snakemake  # noqa: F821


def read(path):
    return json.loads(Path(path).read_text())


with rule_log(sm.log[0], sm.threads):
    relations, root = sm.params.relations, Path(sm.output.summary).parent
    inversions = {r: read(path) for r, path in zip(relations, sm.input.inversions, strict=True)}
    images = {r: {} for r in relations}
    for path in map(Path, sm.input.images):  # <relation>/<model>/images.json
        images[path.parent.parent.name][path.parent.name] = read(path)
    timings = {Path(path).stem: read(path) for path in sm.input.timings}
    grids = {}
    for relation, grid in zip(relations, sm.output.grids, strict=True):
        relation_grid(images[relation]["teacher"], images[relation]["student"], grid, columns=sm.params.columns)
        grids[relation] = Path(grid).relative_to(root).as_posix()
    summary = reversion_summary(inversions, images, timings, grids, words=sm.params.words, notes=sm.params.notes)
    write_summary(sm.output.summary, summary)
    logging.info("wrote %s: %d relations", sm.output.summary, len(relations))
