"""Rule `released_weights`: a released one-step model (config/released.yaml) against its teacher,
as rule `weights` does for our runs: Eq. 14-17, Fig. 2a/2b, the result file weights.json."""

import logging
from pathlib import Path

from dkd.analysis import analyse_models, summarize, write_analysis, write_weights_result
from dkd.analysis.released import load_pair, pair_states
from dkd.io import rule_log
from dkd.vocabulary import released_name

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    pair = load_pair(released_name(sm.wildcards.model), sm.input.catalog)
    if pair.backbone != sm.wildcards.backbone:
        raise ValueError(f"{pair.name} belongs under {pair.backbone}/, not {sm.wildcards.backbone}/")
    teacher, one_step, provenance = pair_states(pair)
    frame, curves = analyse_models(teacher, one_step, include_conv=sm.params.include_conv)
    del teacher, one_step
    summary = summarize(frame)
    write_analysis(frame, summary, Path(sm.output.plot).parent, curves)
    values = write_weights_result(
        sm.output.result,
        backbone=sm.wildcards.backbone,
        model=sm.wildcards.model,
        summary=summary,
        provenance={**provenance, "figure": pair.figure, "include_conv": sm.params.include_conv},
    )
    logging.info("%s: %s", pair.name, values)
