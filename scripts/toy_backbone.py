"""Rule `toy_backbone`: the toy teacher's pipeline folder from the trained U-Net weights."""

import logging
from pathlib import Path

from dkd.io import atomic_folder, rule_log
from dkd.toy.backbone import load_toy_unet, save_toy_backbone

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads), atomic_folder(Path(sm.output.index).parent) as folder:
    save_toy_backbone(folder, load_toy_unet(sm.input.weights))
    logging.info("wrote %s from %s", folder, sm.input.weights)
