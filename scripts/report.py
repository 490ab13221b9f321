"""Rule `report`: report.md with every configured table (ours beside the paper's; each table's own
file is written by its rule, scripts/table.py), the claims, sample grids, the weight-analysis plots and the
Downstream section (each downstream target's summary.json)."""

import logging
import os
from pathlib import Path

from dkd.io import image_path, rule_log
from dkd.report import build_table, read_paper, read_results, table_specs, write_report
from dkd.report.claims import check_claims
from dkd.report.downstream import render_section
from dkd.report.grid import save_grid
from dkd.report.seeds import seed_table, summarise_seeds
from dkd.sampling import unavailable_reasons

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads):
    spec, folder = sm.params.report, Path(sm.output.report).parent
    for images, grid in zip(sm.params.images, sm.output.grids):
        save_grid([p for p in (image_path(images, i) for i in range(20)) if p.is_file()], grid, columns=10)
    raw = read_results(list(sm.input.results))  # sources: paths from the repository root
    results = summarise_seeds(raw, sm.params.seeds)  # each model's mean and standard error over its seeds
    paper = read_paper(sm.input.paper[0]) if sm.input.paper else None
    specs = table_specs(spec["tables"])
    reasons = unavailable_reasons(sm.input.catalog) if any(t.paper for t in specs) else None
    tables = [build_table(table, results, paper, reasons) for table in specs]

    def caption(path):
        where = Path(path).parent.relative_to(folder)
        if Path(path).name == "fig16.png":
            return "Fig. 16: convergence of the one-step students"
        if where.name == "weights":
            return f"Fig. 2a/2b: norm and direction change of {where.parent} against the teacher"
        return f"Samples of {where.parent} ({where.name})"

    figures = [
        {"caption": caption(path), "path": os.path.relpath(path, folder)}
        for path in [*sm.output.grids, *sm.input.plots]
    ]
    written = write_report(
        folder,
        tables,
        title=spec.get("title", "DKD reproduction"),
        intro=spec.get("intro", ""),
        figures=figures,
        claims=check_claims(spec.get("claims", []), results, level=sm.params.level, seeds=sm.params.seeds),
        table_files=False,
        seeds=sm.params.seeds,
        level=sm.params.level,
        seed_table=seed_table(raw, sm.params.seeds),
        downstream=render_section(list(sm.input.downstream), folder),
    )
    logging.info("wrote %s", [str(path) for path in written])
