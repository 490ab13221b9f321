# Weight analysis of Fig. 2 and Table 2's NM/DM columns: a run's merged student against its
# teacher, per layer (CSV, plot) and over all layers (result file results/<backbone>/<run>/weights.json).


rule weights:
    input:
        unpack(teacher_inputs),
        student=results("{backbone}/{run}/pipeline/model_index.json"),
    output:
        result=results("{backbone}/{run}/weights.json"),
        plot=report(
            results("{backbone}/{run}/weights/weights.png"),
            caption="../report/weights.rst",
            category="Figures",
            subcategory="Fig. 2a: weight change per layer",
            labels={"backbone": "{backbone}", "model": "{run}"},
        ),
    log:
        log_path("{backbone}/{run}/weights.log"),
    wildcard_constraints:
        run=RUN_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=60,
    params:
        teacher=teacher_source,
        include_conv=config["analysis"]["include_conv"],
    script:
        "../../scripts/weights.py"
