"""Rule `reversion_tiny_exemplars`: a relation's exemplar folder drawn in code (shapes, ReVersion's layout:
images and text.json), for the tiny configuration (dkd.downstream.reversion.relations.draw_exemplars)."""

import logging
from pathlib import Path

from dkd.downstream.reversion.relations import draw_exemplars
from dkd.io import atomic_folder, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads), atomic_folder(Path(sm.output.text).parent) as folder:
    text = draw_exemplars(folder, sm.wildcards.rv_relation, count=sm.params.images, size=sm.params.size,
                          seed=sm.params.seed)  # fmt: skip
    logging.info("drew %d exemplars of %s in %s", sm.params.images, sm.wildcards.rv_relation, folder)
