"""Rule `tiny_backbone`: a tiny diffusers pipeline folder (random weights) for tests and CI."""

import logging
from pathlib import Path

from dkd.backbones.tiny import save_tiny_backbone
from dkd.io import atomic_folder, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads), atomic_folder(Path(sm.output.index).parent) as folder:
    save_tiny_backbone(sm.wildcards.tiny.removeprefix("tiny-"), folder, seed=sm.params.seed)
    logging.info("wrote %s", folder)
