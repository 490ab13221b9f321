"""Rule `params`: the trainable-parameter table against the paper's counts."""

import logging

from dkd.io import atomic_write_text
from dkd.params import parameter_table, to_markdown

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")  # noqa: F821

table = parameter_table(snakemake.input.expected)  # noqa: F821
mismatches = table[table["match"] != "yes"]
logging.info("%d rows, %d mismatches", len(table), len(mismatches))
if len(mismatches):
    logging.error("rows that do not match the paper:\n%s", mismatches.to_string())
    raise SystemExit(f"{len(mismatches)} parameter counts do not match the paper; see {snakemake.log[0]}")  # noqa: F821
atomic_write_text(snakemake.output.table, "# Trainable parameters\n\n" + to_markdown(table) + "\n")  # noqa: F821
