"""Rule `reversion_invert`: the relation token of one relation, inverted against the frozen teacher from the
relation's exemplars (dkd.downstream.reversion.inversion.invert_relation; one uninterrupted run: it keeps no
checkpoint to resume from). Writes the token's embedding and inversion.json (settings, exemplars, time)."""

import dataclasses
import json
import logging
import time

import torch

from dkd.backbones import load_teacher
from dkd.downstream.reversion.inversion import ReVersionConfig, invert_relation
from dkd.downstream.reversion.relations import exemplar_pairs, read_exemplars, teacher_resolution, word_cosine
from dkd.io import atomic_write_text, rule_log
from dkd.metrics.timing import device_name
from dkd.provenance import file_sha256

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    exemplars = read_exemplars(sm.params.exemplars)  # first: a missing benchmark fails before any loading
    settings = {**sm.params.inversion, **({"init_word": sm.params.init_word} if sm.params.init_word else {})}
    config = ReVersionConfig(token=sm.params.token, **settings)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = load_teacher(sm.params.backbone, sm.params.source, dtype=torch.float32, device=device)
    resolution = sm.params.resolution or teacher_resolution(teacher)
    pairs = exemplar_pairs(exemplars, config.token, resolution)
    logging.info("%s: %d images, %d captions, %dpx; %s", sm.wildcards.rv_relation, len(exemplars), len(pairs),
                 resolution, config)  # fmt: skip
    start = time.perf_counter()
    path = invert_relation(teacher, pairs, config, out=sm.output.embedding)
    seconds = time.perf_counter() - start
    token_id = teacher.tokenizer.convert_tokens_to_ids(config.token)
    vector = teacher.text_encoder.get_input_embeddings().weight.detach()[token_id]
    info = {
        "relation": sm.wildcards.rv_relation,
        "exemplars": str(sm.params.exemplars),
        "images": len(exemplars),
        "captions": len(pairs),
        "resolution": resolution,
        "config": dataclasses.asdict(config),
        "learning_rate": config.learning_rate(),
        "seconds": seconds,
        "device": device_name(device),
        "init_word_cosine": word_cosine(teacher.tokenizer, teacher.text_encoder, vector, config.init_word),
        "embedding_sha256": file_sha256(path),
    }
    atomic_write_text(sm.output.info, json.dumps(info, indent=2) + "\n")
    logging.info("wrote %s in %.1f s", path, seconds)
