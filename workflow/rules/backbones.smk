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
