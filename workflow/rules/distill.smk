# Distillation runs (paper Algorithm 1): results/<backbone>/<run>/pipeline is the merged student,
# params.json its trainable-parameter counts (student, fake) and the backbone's total, curve.csv the
# evaluation-hook metrics over training (Fig. 16; only the header for runs without curves).
# The run's checkpoints live in results/<backbone>/<run>/train/ (not a declared output), so a
# failed, preempted or timed-out attempt leaves them for the next attempt, which resumes.


rule distill:
    input:
        unpack(distill_inputs),
    output:
        pipeline=results("{backbone}/{run}/pipeline/model_index.json"),
        params=results("{backbone}/{run}/params.json"),
        curve=results("{backbone}/{run}/curve.csv"),
    log:
        log_path("{backbone}/{run}/distill.log"),
    wildcard_constraints:
        run=RUN_PATTERN,
    priority: 10
    params:
        settings=lambda wc: config["distill"]["settings"],
        source=teacher_source,
        dtype=lambda wc: config["backbones"][wc.backbone].get("dtype", "float32"),
        train_dir=lambda wc: results(wc.backbone, wc.run, "train"),
        curve=curve_settings,
    resources:
        mem_mb=64000,
        runtime=4320,
        gpus=1,
    conda:
        "../../envs/dkd.yaml"
    script:
        "../../scripts/distill.py"
