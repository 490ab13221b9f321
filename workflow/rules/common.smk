# Config validation and the helpers every rule file uses.
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = Path(config["results"])


def results(*parts):
    """A path under the results folder (config key `results`)."""
    return str(RESULTS.joinpath(*parts))


def log_path(*parts):
    """The log file of a rule, under <results>/logs/."""
    return str(RESULTS.joinpath("logs", *parts))


# -- distillation runs -------------------------------------------------------------------
RUN_PATTERN = r"(lorad|lora|dora|ft)-s(\d+|full)-f(\d+|ft)-(linear|conv)-(zero|xavier)"
TINY_BACKBONES = ("tiny-sd", "tiny-pixart")


def teacher_source(wildcards):
    """The folder or hub id of a backbone's teacher (tiny ones: the folder built by a rule)."""
    if wildcards.backbone in TINY_BACKBONES:
        return results("backbones", wildcards.backbone)
    return config["backbones"][wildcards.backbone]["source"]


def distill_inputs(wildcards):
    inputs = {"prompts": config["distill"]["prompts"]}
    if wildcards.backbone in TINY_BACKBONES:
        inputs["teacher"] = results("backbones", wildcards.backbone, "model_index.json")
    return inputs


def distill_targets():
    """Every configured run's exported student."""
    runs = config.get("distill", {}).get("runs", {})
    return [results(backbone, run, "pipeline", "model_index.json") for backbone, names in runs.items() for run in names]


# -- evaluation images -------------------------------------------------------------------
def _evalset(name):
    return config["evaluation"]["sets"][name]


def shard_range(wildcards):
    """[start, end) of one shard of an evaluation set (shards split the count evenly)."""
    spec = _evalset(wildcards.evalset)
    count, shards, shard = spec["count"], spec.get("shards", 1), int(wildcards.shard)
    size = -(-count // shards)
    return [shard * size, min((shard + 1) * size, count)]


def shard_markers(wildcards):
    shards = _evalset(wildcards.evalset).get("shards", 1)
    return [results(wildcards.backbone, wildcards.model, wildcards.evalset, "shards", f"{k}.json") for k in range(shards)]


def teacher_sampling(wildcards):
    """Multi-step sampling settings of the teacher rows (None for a student)."""
    if wildcards.model != "teacher":
        return None
    return {"source": teacher_source(wildcards), **config["evaluation"]["teachers"][wildcards.backbone]}


def generate_inputs(wildcards):
    inputs = {"prompts": _evalset(wildcards.evalset)["prompts"]}
    if wildcards.model == "teacher":
        if wildcards.backbone in TINY_BACKBONES:
            inputs["teacher"] = results("backbones", wildcards.backbone, "model_index.json")
    else:
        inputs["student"] = results(wildcards.backbone, wildcards.model, "pipeline", "model_index.json")
    return inputs


def image_targets():
    """images.json of every configured model (students and teachers) on every evaluation set."""
    evaluation = config.get("evaluation", {})
    runs = config.get("distill", {}).get("runs", {})
    targets = []
    for evalset in evaluation.get("sets", {}):
        for backbone, names in runs.items():
            models = list(names) + (["teacher"] if backbone in evaluation.get("teachers", {}) else [])
            targets += [results(backbone, model, evalset, "images.json") for model in models]
    return targets
