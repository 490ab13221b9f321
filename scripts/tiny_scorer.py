"""Rule `tiny_scorer`: an image-text scorer with random weights (dkd.train.scorers) and its spec."""

import json
import logging
from pathlib import Path

from dkd.io import atomic_folder, atomic_write_text, rule_log
from dkd.train.scorers import save_tiny_scorer

sm = snakemake  # noqa: F821
folder = Path(sm.output.spec).parent
with rule_log(sm.log[0], sm.threads):
    with atomic_folder(folder / "weights") as weights:
        spec = save_tiny_scorer(weights, seed=sm.params.seed)
    spec = {**spec, "decoder": str(folder / "weights" / "decoder"), "pretrained": str(folder / "weights" / "clip.pt")}
    atomic_write_text(sm.output.spec, json.dumps(spec, indent=2))
    logging.info("wrote %s", sm.output.spec)
