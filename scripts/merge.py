"""Rule `merge`: the weight merge of two runs' exported students (dkd.train.merge)."""

from pathlib import Path

from dkd.io import rule_log
from dkd.train.merge import merge_students

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    first, second = (Path(path).parent for path in (sm.input.first, sm.input.second))
    merge_students(first, second, Path(sm.output.pipeline).parent, weight=sm.params.weight)
