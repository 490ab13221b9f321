"""Rule `fetch_model` (a local rule: the login node has network): one group of pretrained files."""

import json
import logging

from dkd.fetch import fetch_all, files_for
from dkd.io import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    options = dict(sm.params.group)
    rows = fetch_all(files_for(options.pop("what"), **options), out_file=sm.output.marker)
    logging.info("%s: %s", sm.wildcards.group, json.dumps(rows))
