"""Rule `swap_published`: a published checkpoint's denoiser with its teacher's norms or directions (Fig. 2c/d)."""

from pathlib import Path

from dkd.analysis.swap import swap_published
from dkd.io import rule_log
from dkd.sampling import published_spec

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    spec = published_spec(sm.wildcards.backbone, sm.params.published, sm.input.catalog)
    out = Path(sm.output.denoiser).parent
    swap_published(
        spec,
        sm.params.teacher,
        out,
        backbone=sm.wildcards.backbone,
        part=sm.params.part,
        include_conv=sm.params.include_conv,
    )
