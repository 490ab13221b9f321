"""Rule `tiny_backbone`: a tiny diffusers pipeline folder (random weights) for tests and CI."""

import logging
import shutil
from pathlib import Path

from dkd.backbones.tiny import save_tiny_backbone

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")  # noqa: F821
folder = Path(snakemake.output.index).parent  # noqa: F821
tmp = folder.with_name(folder.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
save_tiny_backbone(snakemake.wildcards.tiny.removeprefix("tiny-"), tmp, seed=snakemake.params.seed)  # noqa: F821
shutil.rmtree(folder, ignore_errors=True)
tmp.rename(folder)
logging.info("wrote %s", folder)
