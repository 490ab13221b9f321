# Helpers of the distillation runs (included after common.smk): their inputs, the scorer of an objective with
# the clamped CLIP loss, a student started from another checkpoint, and the merges of two runs.


def scored_run(run):
    """Whether a run's objective scores its samples with an image-text model (the clamped CLIP loss)."""
    return run_objective(run) in vocabulary.SCORED_OBJECTIVES


def scorer_settings(wildcards):
    """dkd.train.scorers.ScorerSpec fields of a run whose objective scores its samples, else None: the toy's
    digit classifier (built by a rule), TAESD and open_clip ViT-B-32 (fetched), or (distill.scorer: tiny)
    the file of a random tiny scorer's fields (built by a rule)."""
    if not scored_run(wildcards.run):
        return None
    if config["evaluation"]["evaluator"] == "toy":
        return {"kind": "toy", "classifier": results("evaluator")}
    if config["distill"]["scorer"] == "tiny":
        return results("backbones", "tiny-scorer", "scorer.json")  # the spec, written by the rule tiny_scorer
    return {"kind": "clip"}


def scorer_inputs(wildcards):
    if not scored_run(wildcards.run):
        return {}
    if config["evaluation"]["evaluator"] == "toy":
        return {"scorer": results("evaluator", "classifier.json")}
    if config["distill"]["scorer"] == "tiny":
        return {"scorer": results("backbones", "tiny-scorer", "scorer.json")}
    return model_marker("scorer", "scorer")


def distill_inputs(wildcards):
    inputs = {
        "prompts": prompt_file(config["distill"]["prompts"]),
        **teacher_inputs(wildcards),
        **scorer_inputs(wildcards),
    }
    start = student_init(wildcards.run)
    if start and _is_hub_id(start):  # fetched before the job (SwiftBrush v2: SD-Turbo's U-Net)
        inputs.update(model_marker(student_init_group(start), "student_init"))
    curve = curve_settings(wildcards)
    if curve:
        inputs.update(
            evaluator_inputs(wildcards), eval_prompts=curve["prompts"], stats=curve["stats"], features=curve["features"]
        )
    return inputs


def distill_targets():
    """Every configured run's exported student, and every merge of two runs."""
    runs = config["distill"]["runs"]
    targets = [
        results(backbone, run, "pipeline", "model_index.json") for backbone, names in runs.items() for run in names
    ]
    return targets + [results(b, model, "pipeline", "model_index.json") for b, model in merged_models()]


def merged_models():
    """(backbone, merged-<name>) of every merge of two runs (distill.merges)."""
    return [
        (backbone, f"{vocabulary.MERGED_PREFIX}{name}")
        for backbone, merges in config["distill"]["merges"].items()
        for name in merges
    ]


def merge_spec(wildcards):
    """The two runs and the weight of a merged model."""
    return config["distill"]["merges"][wildcards.backbone][wildcards.model[len(vocabulary.MERGED_PREFIX) :]]


def student_init_group(source):
    """The fetch group of a student's start on the hub: student-init-<owner>--<name>."""
    return "student-init-" + "--".join(Path(source).parts)


def run_settings(run):
    """distill.run_settings of a run: its plain run's (without -g{N} and -seed{K}), then its -g{N} run's
    merged over it (dkd.vocabulary.run_settings_for); every seed of a run shares them."""
    return vocabulary.run_settings_for(run, config["distill"]["run_settings"])


def student_init(run):
    """The run's student_init setting (a run's over its objective's over the shared one), or None."""
    distill = config["distill"]
    for settings in (run_settings(run), distill["objectives"].get(run_objective(run), {})):
        if "student_init" in settings:
            return settings["student_init"]
    return distill["settings"].get("student_init")
