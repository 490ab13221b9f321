# The report: results/report.md and results/tables/<table>.md, our numbers beside the paper's
# (config/paper/results.csv), sample grids per model (grid.png beside each model's images), the
# weight analysis plots and the claims.


rule report:
    input:
        results=metric_targets(),
        images=[images for images, _ in report_grids()],
        plots=weight_plots() + ([results("fig16.png")] if curve_files() else []),
    output:
        report=results("report.md"),
        grids=[grid for _, grid in report_grids()],
    log:
        log_path("report.log"),
    params:
        report=config.get("report", {}),
        paper=config["paper"].get("results"),
        images=[str(Path(images).with_name("images")) for images, _ in report_grids()],
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/dkd.yaml"
    script:
        "../../scripts/report.py"


# Named targets: `snakemake table2` (or fig2 ...) makes every result file one table needs.
for _table in config.get("report", {}).get("tables", {}):

    rule:
        name:
            _table
        input:
            table_inputs(_table),
        localrule: True


rule fig16:
    input:
        curves=curve_files(),
    output:
        plot=results("fig16.png"),
    log:
        log_path("fig16.log"),
    params:
        metrics=lambda wc: config["distill"]["curves"].get("metrics", ["fid"]),
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/dkd.yaml"
    script:
        "../../scripts/fig16.py"
