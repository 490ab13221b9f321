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
