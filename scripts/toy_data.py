"""Rule `toy_data`: the toy's training, evaluation and validation prompts (three independent draws:
the validation set selects learning rates, benchmarks/toy_lr_sweep.py), and its FID reference images
(the digits' held-out split)."""

import json
import logging
from pathlib import Path

from dkd.data import write_prompts
from dkd.io import atomic_folder, atomic_write_text, rule_log
from dkd.toy.data import load_split, prompt_list, write_reference_images

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    seed = sm.params.seed
    write_prompts(sm.output.train, prompt_list(sm.params.train_prompts, seed=seed))
    write_prompts(sm.output.eval, prompt_list(sm.params.eval_prompts, seed=seed + 1))
    write_prompts(sm.output.val, prompt_list(sm.params.val_prompts, seed=seed + 2))
    reference = Path(sm.output.reference).with_suffix("")  # the images beside reference.json
    with atomic_folder(reference) as folder:
        count = len(write_reference_images(folder, load_split("test")))
    info = {"folder": str(reference), "count": count, "split": "test"}
    logging.info("toy data: %s", info)
    atomic_write_text(sm.output.reference, json.dumps(info, indent=2) + "\n")
