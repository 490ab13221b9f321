# The trainable-parameter table (paper Tables 1, 2, 3, 7) from meta-device models.


rule params:
    input:
        expected=config["paper"]["parameter_counts"],
    output:
        table=results("params.md"),
    log:
        log_path("params.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../../scripts/params.py"
