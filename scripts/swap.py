"""Rule `swap`: a run's exported student with its teacher's norms or directions (Fig. 2c/d; dkd.analysis.swap)."""

from pathlib import Path

from dkd.analysis.swap import swap_student
from dkd.io import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    student = Path(sm.input.student).parent
    out = Path(sm.output.pipeline).parent
    swap_student(student, sm.params.teacher, out, part=sm.params.part, include_conv=sm.params.include_conv)
