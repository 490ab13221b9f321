"""Rule `dreambooth_tiny_metric_models`: random tiny DINO and CLIP models (no download) for the tiny config."""

import json
import logging
from pathlib import Path

from dkd.io import atomic_folder, atomic_write_text, rule_log
from dkd.metrics.subject import save_tiny_subject_models

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    models = Path(sm.output.info).parent / "models"
    with atomic_folder(models) as folder:
        save_tiny_subject_models(folder, seed=sm.params.seed)
    atomic_write_text(sm.output.info, json.dumps({name: str(models / name) for name in ("dino", "clip")}, indent=2))
    logging.info("wrote %s", models)
