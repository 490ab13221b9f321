"""Rule `weights`: norm and direction change of a run's student against the teacher (Eq. 14-17),
the SVD of the direction residual (Fig. 2b), per-layer CSV and plots (Fig. 2a, 2b)."""

import logging
from pathlib import Path

from dkd.analysis import analyse_models, load_state_dict, summarize, write_analysis, write_weights_result
from dkd.backbones import backbone_spec
from dkd.io import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    subfolder = backbone_spec(sm.wildcards.backbone).denoiser_subfolder
    student = str(Path(sm.input.student).parent)
    frame, curves = analyse_models(
        load_state_dict(sm.params.teacher, subfolder),
        load_state_dict(student, subfolder),
        include_conv=sm.params.include_conv,
    )
    summary = summarize(frame)
    write_analysis(frame, summary, Path(sm.output.plot).parent, curves)
    values = write_weights_result(
        sm.output.result,
        backbone=sm.wildcards.backbone,
        model=sm.wildcards.run,
        summary=summary,
        provenance={"teacher": sm.params.teacher, "student": student, "include_conv": sm.params.include_conv},
    )
    logging.info("%s: %s", sm.wildcards.run, values)
