"""Rules `data_coco`, `data_hpsv2`, `data_journeydb`: prepare a prompt set (and COCO's FID reference
folder) under the data folder with dkd.data; the settings are the config's data.<set> mapping."""

import logging
from pathlib import Path

from dkd.data.coco import prepare_coco
from dkd.data.hub import prepare_hpsv2, prepare_journeydb
from dkd.io import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    root, settings = Path(sm.params.root), dict(sm.params.settings)
    if sm.rule == "data_coco":
        written = prepare_coco(sm.wildcards.split, out=root, progress=False, **settings)
    elif sm.rule == "data_hpsv2":
        written = prepare_hpsv2(out=root, progress=False, **settings)
    else:
        written = prepare_journeydb(out=root, progress=False, **settings)
    paths = {Path(p).resolve() for p in written.values()}
    missing = [p for p in sm.output if Path(p).resolve() not in paths]
    if missing:  # e.g. a caption file whose length differs from data.<split>.count
        raise SystemExit(
            f"{sm.rule} wrote {sorted(map(str, paths))}, not {missing}: set the count in the config's "
            f"data section to the number of prompts the source gives."
        )
    logging.info("wrote %s", sorted(map(str, paths)))
