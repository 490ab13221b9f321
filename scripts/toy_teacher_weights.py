"""Rule `toy_teacher_weights`: train the toy teacher (denoising loss with CFG dropout, EMA) and
write its U-Net weights; the text encoder's fingerprint and the settings go in the metadata."""

import json
import logging
import tempfile

from safetensors.torch import save

from dkd.backbones.tiny import write_clip_tokenizer
from dkd.io import atomic_open, rule_log
from dkd.toy.backbone import TEXT_LENGTH, text_encoder_digest, toy_text_encoder
from dkd.toy.teach import ToyTeacherConfig, train_teacher

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    config = ToyTeacherConfig.from_dict(sm.params.settings)
    with tempfile.TemporaryDirectory() as scratch:
        unet, rows = train_teacher(config, write_clip_tokenizer(scratch, max_length=TEXT_LENGTH))
    metadata = {
        "text_encoder_sha256": text_encoder_digest(toy_text_encoder()),
        "config": json.dumps(config.__dict__),
        "final_loss": f"{rows[-1]['loss']:.5f}" if rows else "",
    }
    with atomic_open(sm.output.weights, "wb") as handle:
        handle.write(save(unet.state_dict(), metadata=metadata))
    logging.info("toy teacher: %s", metadata)
