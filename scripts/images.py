"""Rule `images`: check that every shard's images exist and summarise the set."""

import json
import logging

from dkd.io import atomic_write_text, image_path, rule_log
from dkd.provenance import weights_sha256
from dkd.sampling.pipeline import student_info

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    shards = [json.loads(open(path).read()) for path in sm.input.shards]
    indices = [i for shard in shards for i in range(shard["start"], shard["end"])]
    missing = [i for i in indices if not image_path(sm.params.images, i).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} images missing in {sm.params.images}, first {missing[:5]}; rerun the shards.")
    summary = {"images": sm.params.images, "count": len(indices), "seed": shards[0]["seed"], "shards": len(shards)}
    source = sm.params.source  # the weights used, hashed once for all the shards
    summary.update(model_sha256=weights_sha256(source), teacher_sha256=student_info(source).get("teacher_sha256"))
    logging.info("%s", summary)
    atomic_write_text(sm.output.summary, json.dumps(summary, indent=2))
