# The toy benchmark (config/toy.yaml): scikit-learn's digits, a small pixel-space teacher whose
# trained weights ship in config/toy/teacher.safetensors (toy.teacher_weights), and a digit
# classifier that stands in for Inception and CLIP. The rule toy_teacher_weights retrains the
# teacher on request into results/toy/teacher/ (`snakemake --configfile config/toy.yaml
# results/toy/teacher/teacher.safetensors`); point toy.teacher_weights there to use it, or copy it
# over the shipped file. The shipped file is no rule's output, so a fresh clone never retrains.


rule toy_data:
    output:
        train=results("data/toy-train.txt"),
        eval=results("data/toy-eval.txt"),
        val=results("data/toy-val.txt"),
        reference=results("data/reference.json"),
    log:
        log_path("data/toy.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        train_prompts=config["toy"]["train_prompts"],
        eval_prompts=config["toy"]["eval_prompts"],
        val_prompts=config["toy"]["val_prompts"],
        seed=config["toy"]["seed"],
    script:
        "../../scripts/toy_data.py"


rule toy_teacher_weights:
    output:
        weights=results("teacher/teacher.safetensors"),
    log:
        log_path("toy/teacher_weights.log"),
    conda:
        "../../envs/dkd.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=config["toy"]["teacher"],
    script:
        "../../scripts/toy_teacher_weights.py"


rule toy_backbone:
    input:
        weights=config["toy"]["teacher_weights"],
    output:
        index=results("backbones/toy/model_index.json"),
    log:
        log_path("backbones/toy.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../../scripts/toy_backbone.py"


# The evaluator: the digit classifier's trained weights ship in config/toy/evaluator.safetensors
# (toy.evaluator_weights), so that the FID of a set of images is the same on every machine; the rule
# toy_evaluator_weights retrains them on request into <results>/classifier/ (point toy.evaluator_weights
# there). The rule toy_evaluator checks the held-out accuracy of the weights it is given.
rule toy_evaluator_weights:
    output:
        weights=results("classifier/evaluator.safetensors"),
    log:
        log_path("toy/evaluator_weights.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=config["toy"]["classifier"],
        min_accuracy=config["toy"]["min_accuracy"],
    script:
        "../../scripts/toy_evaluator_weights.py"


rule toy_evaluator:
    input:
        weights=config["toy"]["evaluator_weights"],
    output:
        info=results("evaluator/classifier.json"),
    log:
        log_path("evaluator/toy.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        min_accuracy=config["toy"]["min_accuracy"],
    script:
        "../../scripts/toy_evaluator.py"
