# DKD reproduction workflow. Run from the repository root:
#   snakemake --cores 2 all                 (local)
#   snakemake --profile slurm all           (cluster; see README)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/params.smk"


rule all:
    input:
        rules.params.output,
    default_target: True
