# DKD reproduction workflow. Run from the repository root:
#   snakemake --cores 2 all                 (local)
#   snakemake --profile slurm all           (cluster; see README)
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


# The paper's configuration, unless config files are given (`--configfile config/toy.yaml`): those
# are used alone, merged in order, never into the paper's (`--config key=value` still overrides).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# A backbone is one folder name under the results, never the downstream targets' folder (whose files,
# e.g. downstream/<target>/teacher/timing.json, would otherwise match the per-model rules).
wildcard_constraints:
    backbone=r"(?!downstream/)[^/]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/released.smk"
include: "workflow/rules/reporting.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/params.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/backbones.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/controlnet.smk"
include: "workflow/rules/dreambooth.smk"
include: "workflow/rules/scalecrafter.smk"
include: "workflow/rules/reversion.smk"


rule all:
    default_target: True
    input:
        rules.params.output,
        distill_targets(),
        image_targets(),
        metric_targets(),
        rules.report.output if config.get("report") else [],


# The one-step student inside ControlNet, DreamBooth, ScaleCrafter and ReVersion (config downstream).
rule downstream:
    input:
        downstream_summaries(),
    localrule: True
