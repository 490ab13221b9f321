"""Rule `<table>` (`snakemake table3`): one table of the report, ours beside the paper's, from the
result files that table reads alone."""

from dkd.io import atomic_write_text, rule_log
from dkd.report import build_table, read_paper, read_results, render_table, table_specs
from dkd.report.seeds import summarise_seeds
from dkd.sampling import unavailable_reasons

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    (spec,) = table_specs({sm.rule: sm.params.spec})
    paper = read_paper(sm.input.paper[0]) if sm.input.paper else None
    reasons = unavailable_reasons(sm.input.catalog) if spec.paper else None  # footnotes of rows without weights
    results = summarise_seeds(read_results(list(sm.input.results)), sm.params.seeds)  # mean ± SE over seeds
    table = build_table(spec, results, paper, reasons)
    atomic_write_text(sm.output.table, render_table(table))
