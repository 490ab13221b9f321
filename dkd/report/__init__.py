"""The markdown report of the workflow: our numbers beside the paper's, in the paper's table layout.

``read_results`` / ``read_paper`` load the numbers, ``TableSpec.from_dict`` / ``build_table`` make
one table (each metric shown as ``METRICS`` says), ``render_table`` / ``render_report`` /
``write_report`` produce the markdown.
"""

from .formats import METRICS, MetricFormat, format_delta, format_value, metric_format
from .render import render_report, render_table, write_report
from .results import as_number, read_paper, read_results
from .tables import RowSpec, Table, TableSpec, build_table, table_specs

__all__ = [
    "METRICS",
    "MetricFormat",
    "RowSpec",
    "Table",
    "TableSpec",
    "as_number",
    "build_table",
    "format_delta",
    "format_value",
    "metric_format",
    "read_paper",
    "read_results",
    "render_report",
    "render_table",
    "table_specs",
    "write_report",
]
