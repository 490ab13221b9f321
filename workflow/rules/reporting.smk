# Helpers of the report (included after common.smk): the result files each table reads, the grids, the
# weight-analysis plots, the claims and the paper's numbers.


def report_grids():
    """(images.json, grid.png) of every evaluated model on the sets named in report.grids."""
    return [
        (results(backbone, model, evalset, "images.json"), results(backbone, model, evalset, "grid.png"))
        for backbone, evalset in config.get("report", {}).get("grids", [])
        for model in evaluated_models(backbone)
        if not vocabulary.split_seed(model)[1]  # a grid of the first seed (images of the others beside it)
    ]


def weight_plots():
    """Fig. 2a (weights.png) and 2b (energy.png) of every analysed run and released model."""
    models = [(backbone, run) for backbone, names in config["analysis"]["weights"].items() for run in names]
    return [
        results(backbone, model, "weights", name)
        for backbone, model in models + released_models()
        if not vocabulary.split_seed(model)[1]  # the plots of the first seed
        for name in ("weights.png", "energy.png")
    ]


def report_settings():
    """config report, its claims followed by one per analysed released model (released_claims)."""
    spec = dict(config.get("report", {}))
    spec["claims"] = list(spec.get("claims", [])) + released_claims()
    return spec


# The file of ours that holds each metric a report table can show; a run's own files.
METRIC_FILES, RUN_LEVEL_FILES = vocabulary.METRIC_FILES, vocabulary.RUN_LEVEL_FILES
MODEL_LEVEL_FILES = vocabulary.MODEL_LEVEL_FILES


def paper_results():
    """The paper's numbers (config paper.results) as an input of the tables: editing them re-renders."""
    path = config["paper"].get("results")
    return [path] if path else []


def report_results():
    """Every result file of the report: the configured metrics and each table's own files (the same
    files its table rule renders from, so report.md and tables/<table>.md agree)."""
    files = metric_targets() + [f for name in config.get("report", {}).get("tables", {}) for f in table_inputs(name)]
    return list(dict.fromkeys(files))


def table_inputs(name):
    """The result files a report table reads (its named target: `snakemake table2`)."""
    spec = config["report"]["tables"][name]
    files = []
    for row, model in [(row, m) for row in spec["rows"] if row.get("model") for m in seeded_models(row["model"])]:
        for metric in spec["columns"]:
            file = METRIC_FILES.get(metric)
            if metric in row["values"]:
                continue
            if file is None:
                raise ValueError(
                    f"report.tables.{name}: no result file holds column {metric!r} (they hold "
                    f"{', '.join(METRIC_FILES)}); give it in the values of row {row['label']!r}"
                )
            if file in MODEL_LEVEL_FILES:
                kind = model_kind(model)
                if file not in RUN_LEVEL_FILES or kind == "run" or (kind == "released" and file == "weights.json"):
                    files.append(results(row["backbone"], model, file))
            else:
                files.append(results(row["backbone"], model, row["evalset"], file))
    return list(dict.fromkeys(files))


def seeded_models(model):
    """A model named by a report row at every seed (distill.seeds; a model without seeds once)."""
    return vocabulary.seeded([model], config["distill"]["seeds"])


def curve_files():
    curves = config["distill"].get("curves")
    return [
        results(backbone, run, "curve.csv")
        for backbone, names in (curves["runs"] if curves else {}).items()
        for run in names
    ]
