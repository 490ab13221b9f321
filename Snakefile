# DKD reproduction workflow. Run from the repository root:
#   snakemake --cores 2 all                 (local)
#   snakemake --profile slurm all           (cluster; see README)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/params.smk"
include: "workflow/rules/backbones.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/generate.smk"


rule all:
    input:
        rules.params.output,
        distill_targets(),
        image_targets(),
    default_target: True
