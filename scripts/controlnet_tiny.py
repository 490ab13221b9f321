"""Rule `tiny_controlnet`: a ControlNet of the tiny SD teacher with random non-zero output convolutions,
and a synthetic source picture (the tiny config's controlnet target; nothing is downloaded)."""

import logging
from pathlib import Path

from dkd.downstream.controlnet.run import draw_source, tiny_controlnet
from dkd.io import atomic_folder, atomic_open, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    net = tiny_controlnet(Path(sm.input.teacher).parent, seed=sm.params.seed)
    with atomic_folder(Path(sm.output.controlnet).parent) as folder:
        net.save_pretrained(folder)
    with atomic_open(sm.output.image, "wb") as handle:
        draw_source(sm.params.resolution, seed=sm.params.seed).save(handle, format="PNG")
    logging.info("wrote %s and %s", sm.output.controlnet, sm.output.image)
