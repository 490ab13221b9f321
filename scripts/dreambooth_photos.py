"""Rule `dreambooth_photos`: a subject's photos (the DreamBooth data set's, or a synthetic subject drawn)."""

import json
import logging

from dkd.downstream.dreambooth.data import prepare_photos
from dkd.io import atomic_folder, atomic_write_text, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    with atomic_folder(sm.output.photos) as folder:
        record = prepare_photos(sm.wildcards.subject, sm.params.klass, folder, dataset=sm.params.dataset,
                                seed=sm.params.seed)  # fmt: skip
    atomic_write_text(sm.output.info, json.dumps(record, indent=2) + "\n")
    logging.info("%s: %d photos", sm.wildcards.subject, len(record["photos"]))
