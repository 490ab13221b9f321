# Metrics of a model's evaluation images, one result file each (dkd.report reads them):
# results/<backbone>/<model>/<evalset>/{fid,pr,text_image}.json, and results/<backbone>/<model>/hpsv2/hps.json
# over the HPSv2 style sets (Table 6); results/<backbone>/<model>/timing.json, seconds per image at
# batch 1 with text encoder and decoder (Table 5). FID and precision/recall share one
# pass over the images' features; the reference set's features are read once per set.
# The evaluator is the paper's (Inception, open_clip ViT-g-14) or the toy's digit classifier.


rule reference_stats:
    input:
        unpack(reference_inputs),
    output:
        stats=results("reference-stats/{evalset}.npz"),
        features=results("reference-stats/{evalset}-features.npy"),
    log:
        log_path("reference-stats/{evalset}.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=16000,
        runtime=120,
        gpus=1,
    params:
        reference=reference_folder,
        reference_mode=reference_mode,
        evaluator=evaluator_settings,
        scratch=lambda wc: results("reference-stats", f"{wc.evalset}-256"),
    script:
        "../../scripts/metric.py"


rule features_metrics:
    input:
        unpack(reference_inputs),
        images=results("{backbone}/{model}/{evalset}/images.json"),
        stats=results("reference-stats/{evalset}.npz"),
        features=results("reference-stats/{evalset}-features.npy"),
    output:
        fid=results("{backbone}/{model}/{evalset}/fid.json"),
        pr=results("{backbone}/{model}/{evalset}/pr.json"),
    log:
        log_path("{backbone}/{model}/{evalset}/fid-pr.log"),
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,  # prdc: ~12 GB for 30k against 30k features (equal-size sets; benchmarks/prdc_memory.py)
        runtime=120,
        gpus=1,
    params:
        evaluator=evaluator_settings,
        images=lambda wc: results(wc.backbone, wc.model, wc.evalset, "images"),
        scratch=lambda wc: results(wc.backbone, wc.model, wc.evalset, "images-256"),
        bootstrap=lambda wc: config["evaluation"]["bootstrap"],
    script:
        "../../scripts/metric.py"


rule text_image:
    input:
        unpack(text_image_evaluator_inputs),
        images=results("{backbone}/{model}/{evalset}/images.json"),
        prompts=lambda wc: prompt_file(config["evaluation"]["sets"][wc.evalset]["prompts"]),
    output:
        result=results("{backbone}/{model}/{evalset}/text_image.json"),
    log:
        log_path("{backbone}/{model}/{evalset}/text_image.log"),
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=16000,
        runtime=120,
        gpus=1,
    params:
        evaluator=evaluator_settings,
        images=lambda wc: results(wc.backbone, wc.model, wc.evalset, "images"),
        size=lambda wc: config["evaluation"]["sets"][wc.evalset]["count"],
    script:
        "../../scripts/metric.py"


rule hps:
    input:
        unpack(lambda wc: model_marker("hps", "hps_model")),
        images=lambda wc: [results(wc.backbone, wc.model, evalset, "images.json") for evalset in hps_sets().values()],
        prompts=lambda wc: [prompt_file(_evalset(evalset)["prompts"]) for evalset in hps_sets().values()],
    output:
        result=results("{backbone}/{model}/hpsv2/hps.json"),
    log:
        log_path("{backbone}/{model}/hpsv2/hps.log"),
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpus=1,
    params:
        evaluator=evaluator_settings,
        styles=hps_styles,
        version=lambda wc: config["evaluation"]["hps"]["version"],
        checkpoint=lambda wc: config["evaluation"]["hps"].get("checkpoint"),
    script:
        "../../scripts/metric.py"


rule timing:
    input:
        unpack(model_inputs),
    output:
        result=results("{backbone}/{model}/timing.json"),
    log:
        log_path("{backbone}/{model}/timing.log"),
    wildcard_constraints:
        model=MODEL_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=30,
        gpus=1,
    params:
        source=model_source,
        catalog=lambda wc: published_catalog() if catalog_model(wc.model) else None,
        teacher=teacher_sampling,
        dtype=lambda wc: config["backbones"][wc.backbone]["dtype"],
        settings=lambda wc: {k: v for k, v in config["evaluation"]["timing"].items() if k != "models"},
    script:
        "../../scripts/timing.py"
