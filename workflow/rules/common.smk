# Config validation and the helpers every rule file uses.
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = Path(config["results"])


def results(*parts):
    """A path under the results folder (config key `results`)."""
    return str(RESULTS.joinpath(*parts))


def log_path(*parts):
    """The log file of a rule, under <results>/logs/."""
    return str(RESULTS.joinpath("logs", *parts))
