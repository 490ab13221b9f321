"""Reading the numbers the report compares: our result JSON files and the paper's results.csv.

Both readers return a long DataFrame (one value per line) and keep the file each value came from in
a ``source`` column, so that every number of the report traces back to a file. Values are kept as
written: numbers stay Python numbers, text (the paper's "U-Net", "unknown") stays text; nothing is
filled in. Bad input raises one ``ValueError`` that names the file and what is wrong.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

RESULT_COLUMNS = ("backbone", "model", "evalset", "metric", "value", "source")
PAPER_COLUMNS = ("table", "backbone", "method", "metric", "value")
RESULT_KEYS = {"required": {"backbone", "model", "evalset", "values"}, "optional": {"provenance"}}


def as_number(value) -> float | None:
    """``value`` as a finite float, or None for text, empty and non-finite values (bools are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _expand(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """The JSON files named by ``paths``; a folder stands for every ``*.json`` below it (sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        else:
            files.append(path)
    return files


def _check_name(source: Path, key: str, value, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value.strip():
        kind = "a non-empty string or null" if nullable else "a non-empty string"
        raise ValueError(f"{source}: {key!r} must be {kind}; got {value!r}.")


def _parse_result(source: Path, data) -> list[dict]:
    """The records of one result file; raises ValueError naming ``source`` on any schema problem."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a result file holds one JSON object; got {type(data).__name__}.")
    missing = sorted(RESULT_KEYS["required"] - set(data))
    unknown = sorted(set(data) - RESULT_KEYS["required"] - RESULT_KEYS["optional"])
    if missing or unknown:
        raise ValueError(
            f"{source}: missing key(s) {missing}, unknown key(s) {unknown}; a result file has "
            f"{sorted(RESULT_KEYS['required'])} and optionally {sorted(RESULT_KEYS['optional'])}."
        )
    for key in ("backbone", "model"):
        _check_name(source, key, data[key])
    _check_name(source, "evalset", data["evalset"], nullable=True)
    if not isinstance(data.get("provenance", {}), dict):
        raise ValueError(f"{source}: 'provenance' must be a JSON object; got {data['provenance']!r}.")
    values = data["values"]
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{source}: 'values' must be a non-empty object of metric -> value; got {values!r}.")
    records = []
    for metric, value in values.items():
        if not metric.strip():
            raise ValueError(f"{source}: 'values' has an empty metric name.")
        is_text = isinstance(value, str) and value.strip() != ""
        if not is_text and (isinstance(value, (bool, str)) or as_number(value) is None):
            raise ValueError(
                f"{source}: values[{metric!r}] must be a finite number or a non-empty text; got {value!r}."
            )
        records.append(
            {
                "backbone": data["backbone"],
                "model": data["model"],
                "evalset": data["evalset"],
                "metric": metric,
                "value": value,
                "source": str(source),
            }
        )
    return records


def read_results(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> pd.DataFrame:
    """Our results, one line per value: columns backbone, model, evalset (None for model-level values),
    metric, value, source (the JSON file, as given).

    ``paths`` are result files written by the workflow, or folders searched for ``*.json``. A file
    that is not valid JSON or not of the result schema, or two files giving the same
    (backbone, model, evalset, metric), is one ``ValueError`` naming the file(s).
    """
    records: list[dict] = []
    seen: dict[tuple, str] = {}
    for path in tqdm(_expand(paths), desc="read results", unit="file", disable=None):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"{path}: cannot read the result file ({error.strerror or error}).") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})."
            ) from None
        for record in _parse_result(path, data):
            key = tuple(record[k] for k in ("backbone", "model", "evalset", "metric"))
            if key in seen:
                raise ValueError(
                    f"{path}: {key[3]!r} of (backbone={key[0]!r}, model={key[1]!r}, evalset={key[2]!r}) "
                    f"is also in {seen[key]}; every value must come from one file."
                )
            seen[key] = record["source"]
            records.append(record)
    return pd.DataFrame(records, columns=list(RESULT_COLUMNS), dtype=object)


def read_paper(path: str | os.PathLike) -> pd.DataFrame:
    """The paper's numbers (``config/paper/results.csv``): columns table, backbone, method, metric,
    value, source. ``value`` is the text as transcribed ("25.27", "U-Net"), None where the paper
    prints "-" or nothing. A missing column, an empty key field or a duplicated
    (table, backbone, method, metric) is one ``ValueError`` naming the file and line.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if sorted(header) != sorted(PAPER_COLUMNS):
                raise ValueError(f"{path}: columns must be {list(PAPER_COLUMNS)}; got {header}.")
            rows = [(reader.line_num, row) for row in reader]
    except OSError as error:
        raise ValueError(f"{path}: cannot read the paper's results ({error.strerror or error}).") from None
    except csv.Error as error:
        raise ValueError(f"{path}: not a valid CSV ({error}).") from None
    records: list[dict] = []
    seen: dict[tuple, int] = {}
    for line, row in rows:
        if None in row or any(row[c] is None for c in PAPER_COLUMNS):
            raise ValueError(f"{path}, line {line}: expected {len(PAPER_COLUMNS)} fields.")
        record = {c: row[c].strip() for c in PAPER_COLUMNS}
        empty = [c for c in PAPER_COLUMNS[:-1] if not record[c]]
        if empty:
            raise ValueError(f"{path}, line {line}: empty {empty}.")
        key = tuple(record[c] for c in PAPER_COLUMNS[:-1])
        if key in seen:
            raise ValueError(f"{path}, line {line}: {key} is already given on line {seen[key]}.")
        seen[key] = line
        record["value"] = record["value"] or None
        record["source"] = str(path)
        records.append(record)
    return pd.DataFrame(records, columns=[*PAPER_COLUMNS, "source"], dtype=object)


def write_result(
    path: str | os.PathLike,
    *,
    backbone: str,
    model: str,
    evalset: str | None,
    values: dict,
    provenance: dict | None = None,
) -> Path:
    """Write one result file in the form :func:`read_results` reads (atomically); checked by reading it back.
    Its provenance gains the software and device that computed it (:func:`dkd.provenance.environment`)."""
    from ..io import atomic_write_text
    from ..provenance import environment

    record = {
        "backbone": backbone,
        "model": model,
        "evalset": evalset,
        "values": values,
        "provenance": {"environment": environment(), **(provenance or {})},
    }
    _parse_result(Path(path), json.loads(json.dumps(record, default=str)))  # the same checks as the reader
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)
