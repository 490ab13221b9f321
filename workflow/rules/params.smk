# The trainable-parameter table (paper Tables 1, 2, 3, 7) from meta-device models.


rule params:
    input:
        expected=config["paper"]["parameter_counts"],
    output:
        table=results("params.md"),
    log:
        log_path("params.log"),
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/dkd.yaml"
    script:
        "../../scripts/params.py"
