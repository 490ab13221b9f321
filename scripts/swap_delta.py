"""Rule `swap_delta`: each metric of a swapped model minus the same metric of its one-step model (Fig. 2c)."""

import logging

from dkd.io import rule_log
from dkd.report.results import as_number, read_results, write_result
from dkd.vocabulary import swapped_parts

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    swapped, student = (read_results(list(files)) for files in (sm.input.swapped, sm.input.student))
    ours = {m: as_number(v) for m, v in zip(student["metric"], student["value"]) if as_number(v) is not None}
    values = {
        f"delta_{metric}": as_number(value) - ours[metric]
        for metric, value in zip(swapped["metric"], swapped["value"])
        if metric in ours and as_number(value) is not None
    }
    part, model = swapped_parts(sm.wildcards.model)
    if not values:
        raise SystemExit(f"{sm.wildcards.model}: no metric of {model} on {sm.wildcards.evalset} to compare with")
    write_result(
        sm.output.result,
        backbone=sm.wildcards.backbone,
        model=sm.wildcards.model,
        evalset=sm.wildcards.evalset,
        values=values,
        provenance={"student": model, "teacher_part": part, "files": [*sm.input.swapped, *sm.input.student]},
    )
    logging.info("%s: %s", sm.wildcards.model, values)
