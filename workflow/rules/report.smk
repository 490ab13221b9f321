# The report: results/tables/<table>.md (one rule each) and results/report.md, our numbers beside the paper's
# (config/paper/results.csv), sample grids per model (grid.png beside each model's images), the
# weight analysis plots and the claims. The tables, report.md, grids and plots are marked report() for
# `snakemake --report report.html` (captions in workflow/report/).


rule report:
    input:
        results=report_results(),
        paper=paper_results(),
        catalog=published_catalog(),  # the reasons of the paper rows without public weights
        tables=[results("tables", f"{name}.md") for name in config.get("report", {}).get("tables", {})],
        images=[images for images, _ in report_grids()],
        plots=weight_plots() + ([results("fig16.png")] if curve_files() else []),
        downstream=downstream_summaries(),  # the Downstream section (downstream.smk)
    output:
        report=report(
            results("report.md"),
            caption="../report/report.rst",
            category="Report",
            labels={"file": "report.md"},
        ),
        grids=[
            report(
                grid,
                caption="../report/grid.rst",
                category="Samples",
                subcategory=f"{backbone} on {evalset}",
                labels={"backbone": backbone, "model": model, "evalset": evalset},
            )
            for _, grid in report_grids()
            # <results>/<backbone>/<model>/<evalset>/grid.png, labelled by its folders
            for backbone, model, evalset in [Path(grid).parts[-4:-1]]
        ],
    log:
        log_path("report.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        report=report_settings(),
        images=[str(Path(images).with_name("images")) for images, _ in report_grids()],
        seeds=config["distill"]["seeds"],  # the mean and standard error over seeds
        level=config.get("report", {}).get("decision", {}).get("level", 0.95),  # claims: report.decision.level
    script:
        "../../scripts/report.py"


# One rule per table, named after it: `snakemake table2` makes the result files that table needs
# and renders results/tables/table2.md from them alone, so a table is done without waiting for the
# others (or for a failed job of another table); `report` then gathers every table.
for _table, _spec in config.get("report", {}).get("tables", {}).items():

    rule:
        name:
            _table
        input:
            results=table_inputs(_table),
            paper=paper_results(),
            catalog=published_catalog(),
        output:
            table=report(
                results("tables", f"{_table}.md"),
                caption="../report/table.rst",
                category="Tables",
                labels={"table": _table, "title": _spec["title"]},
            ),
        log:
            log_path("tables", f"{_table}.log"),
        localrule: True
        conda:
            "../../envs/dkd.yaml"
        params:
            spec=_spec,
            seeds=config["distill"]["seeds"],
        script:
            "../../scripts/table.py"


rule fig16:
    input:
        curves=curve_files(),
    output:
        plot=report(
            results("fig16.png"),
            caption="../report/fig16.rst",
            category="Figures",
            subcategory="Fig. 16: convergence",
            labels={"figure": "Fig. 16"},
        ),
        table=results("fig16.csv"),
    log:
        log_path("fig16.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        metrics=lambda wc: config["distill"]["curves"]["metrics"],
    script:
        "../../scripts/fig16.py"
