# Distillation runs (paper Algorithm 1): results/<backbone>/<run>/pipeline is the merged student,
# params.json its trainable-parameter counts (student, fake) and the backbone's total, train.json its
# training cost (Table 5: gpu_days = training wall-clock x processes summed over the attempts, with
# the device of each), curve.csv the evaluation-hook metrics over training (Fig. 16; only the header
# for runs without curves).
# The run's checkpoints live in results/<backbone>/<run>/train/ (not a declared output), so a
# failed, preempted or timed-out attempt leaves them for the next attempt, which resumes; train/distill.log
# keeps the log lines of every attempt (Snakemake deletes the rule's log before each one).
# `gpus` > 1 (a GPU machine): that many data-parallel processes in the one job (accelerate launch);
# the job's process alone writes the outputs.


rule distill:
    input:
        unpack(distill_inputs),
    output:
        pipeline=results("{backbone}/{run}/pipeline/model_index.json"),
        params=results("{backbone}/{run}/params.json"),
        train=results("{backbone}/{run}/train.json"),
        curve=results("{backbone}/{run}/curve.csv"),
    log:
        log_path("{backbone}/{run}/distill.log"),
    wildcard_constraints:
        run=RUN_PATTERN,
    priority: 10
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=64000,
        runtime=4320,
        gpus=1,
    params:
        settings=lambda wc: config["distill"]["settings"],
        objective_settings=lambda wc: config["distill"]["objectives"].get(run_objective(wc.run), {}),
        run_settings=lambda wc: run_settings(wc.run),
        source=teacher_source,
        dtype=lambda wc: config["backbones"][wc.backbone]["dtype"],
        curve=curve_settings,
        scorer=scorer_settings,
    script:
        "../../scripts/distill.py"


# A model made of two runs (SwiftBrush v2's merge, distill.merges): weight x first + (1 - weight) x second
# over the denoisers of their exported pipelines (adapters folded), the rest of the first's pipeline.
rule merge:
    input:
        first=lambda wc: results(wc.backbone, merge_spec(wc)["first"], "pipeline", "model_index.json"),
        second=lambda wc: results(wc.backbone, merge_spec(wc)["second"], "pipeline", "model_index.json"),
    output:
        pipeline=results("{backbone}/{model}/pipeline/model_index.json"),
    log:
        log_path("{backbone}/{model}/merge.log"),
    wildcard_constraints:
        model=vocabulary.MERGED_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=60,
    params:
        weight=lambda wc: merge_spec(wc)["weight"],
    script:
        "../../scripts/merge.py"
