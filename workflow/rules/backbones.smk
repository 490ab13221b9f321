# Teachers: hub ids (loaded by the rules that need them) or tiny pipeline folders built here.


rule tiny_backbone:
    output:
        index=results("backbones/{tiny}/model_index.json"),
    log:
        log_path("backbones/{tiny}.log"),
    wildcard_constraints:
        tiny="tiny-sd|tiny-pixart",
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        seed=config["seed"],
    script:
        "../../scripts/tiny_backbone.py"


# The clamped CLIP loss's scorer with random weights (distill.scorer: tiny): a TAESD-shaped decoder and
# open_clip ViT-S-32 weights, for the tiny config's PG-SB and SwiftBrush v2 runs (no download).
rule tiny_scorer:
    output:
        spec=results("backbones/tiny-scorer/scorer.json"),
    log:
        log_path("backbones/tiny-scorer.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        seed=config["seed"],
    script:
        "../../scripts/tiny_scorer.py"
