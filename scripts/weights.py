"""Rule `weights`: norm and direction change of a run's student against the teacher (Eq. 14-17),
the SVD of the direction residual (Fig. 2b), per-layer CSV and plot (Fig. 2a)."""

import logging
from pathlib import Path

from dkd.analysis import compare_models, load_state_dict, summarize, write_analysis
from dkd.backbones import backbone_spec
from dkd.io import rule_log
from dkd.report.results import write_result

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    subfolder = backbone_spec(sm.wildcards.backbone).denoiser_subfolder
    student = str(Path(sm.input.student).parent)
    frame = compare_models(
        load_state_dict(sm.params.teacher, subfolder),
        load_state_dict(student, subfolder),
        include_conv=sm.params.include_conv,
    )
    summary = summarize(frame)
    write_analysis(frame, summary, Path(sm.output.plot).parent)
    values = {
        "norm_mean_pct": summary["norm_mean_pct"],
        "dir_mean_pct": summary["direction_mean_pct"],
        "norm_std_pct": summary["norm_std_pct"],
        "dir_std_pct": summary["direction_std_pct"],
        "energy_kept": summary["energy_at_30pct"],
        "rank_fraction_90pct": summary["rank_fraction_90pct"],
    }
    write_result(
        sm.output.result,
        backbone=sm.wildcards.backbone,
        model=sm.wildcards.run,
        evalset=None,
        values=values,
        provenance={
            "teacher": sm.params.teacher,
            "student": student,
            "layers": summary["layers_used"],
            "include_conv": sm.params.include_conv,
        },
    )
    logging.info("%s: %s", sm.wildcards.run, values)
