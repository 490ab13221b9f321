# Evaluation images: results/<backbone>/<model>/<evalset>/images/<i:05d>.png, where <model> is a
# distillation run (its one-step student), "teacher" (multi-step, with CFG) or "teacher-1step"
# (the teacher used as a one-step generator). Each shard writes
# its index range (skipping images on disk, one seed per index) and a JSON marker; the images
# folder itself is not a declared output, so a killed shard resumes where it stopped.


rule generate_shard:
    input:
        unpack(generate_inputs),
    output:
        marker=results("{backbone}/{model}/{evalset}/shards/{shard}.json"),
    log:
        log_path("{backbone}/{model}/{evalset}/generate-{shard}.log"),
    wildcard_constraints:
        model=MODEL_PATTERN,
        shard=r"\d+",
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=600,
        gpus=1,
    params:
        images=lambda wc: results(wc.backbone, wc.model, wc.evalset, "images"),
        range=shard_range,
        seed=lambda wc: config["evaluation"]["sets"][wc.evalset]["seed"],
        teacher=teacher_sampling,
        source=model_source,
        catalog=lambda wc: published_catalog() if catalog_model(wc.model) else None,
        dtype=config["evaluation"]["dtype"],
        batch_size=config["evaluation"]["batch_size"],
    script:
        "../../scripts/generate.py"


rule images:
    input:
        shards=shard_markers,
    output:
        summary=results("{backbone}/{model}/{evalset}/images.json"),
    log:
        log_path("{backbone}/{model}/{evalset}/images.log"),
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        images=lambda wc: results(wc.backbone, wc.model, wc.evalset, "images"),
        source=model_source,
    script:
        "../../scripts/images.py"
