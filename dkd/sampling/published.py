"""Published one-step checkpoints of Tables 1, 5, 6 and 9 as sampling specs (``config/published.yaml``).

The paper compares DKD with one-step models of other authors. Those with public weights that a
diffusers pipeline can run are listed under ``models:`` with the exact settings of their model card
or inference code (scheduler, timesteps, guidance, LoRA fuse scale, U-Net replacement) and the paper
rows they fill; ``to_spec()`` turns one into a :class:`dkd.sampling.specs.MultiStepSpec` for
:class:`dkd.sampling.samplers.DiffusersSampler`. Rows that cannot be sampled here (no public weights, the
paper's own retraining, custom sampling code) are listed under ``unavailable:`` with the reason, so
that the report footnotes them (:func:`unavailable_reasons`).

Every entry is validated when loaded: an unknown or missing key, an unknown scheduler or scheduler
argument, a paper row that ``config/paper/results.csv`` does not have, or a row claimed twice is one
``ValueError`` naming the file and the entry.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..backbones import config_dir
from ..io import read_yaml
from .specs import MultiStepSpec, scheduler_class

BACKBONES = ("sd15", "sd21", "pixart256")
# How the paper obtained the numbers of a row (see the header of config/published.yaml).
PROVENANCES = ("official", "quoted", "reproduced")
NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")

MODEL_KEYS = {
    "required": {"backbone", "provenance", "rows", "base", "steps", "guidance_scale", "resolution", "reference"},
    "optional": {
        "scheduler",
        "scheduler_kwargs",
        "timesteps",
        "eta",
        "adapter",
        "denoiser",
        "custom_pipeline",
        "notes",
    },
}
UNAVAILABLE_KEYS = {"required": {"backbone", "rows", "reason"}, "optional": {"reference"}}
ROW_KEYS = {"required": {"table", "method"}, "optional": set()}
ADAPTER_KEYS = {"required": {"repo", "file"}, "optional": {"scale"}}
DENOISER_KEYS = {"required": {"repo", "file"}, "optional": set()}


def published_path() -> Path:
    """``config/published.yaml`` of the repository (``$DKD_CONFIG_DIR`` overrides the folder)."""
    return config_dir() / "published.yaml"


def results_path() -> Path:
    """``config/paper/results.csv``: every number of the paper's tables, one per line."""
    return config_dir() / "paper" / "results.csv"


@dataclass(frozen=True)
class PaperRow:
    """One row of one table of the paper: ``table`` and ``method`` exactly as in results.csv."""

    table: str
    method: str


@dataclass(frozen=True)
class HubFile:
    """A weights file: ``repo`` (hub id or local folder) and ``file`` in it; ``scale``: LoRA fuse scale."""

    repo: str
    file: str
    scale: float = 1.0


def _check_rows(name: str, rows, provenance: str | None) -> tuple[PaperRow, ...]:
    rows = tuple(rows)
    if not rows or not all(isinstance(row, PaperRow) for row in rows):
        raise ValueError(f"{name!r}: rows must be a non-empty list of {{table, method}}.")
    if len(set(rows)) != len(rows):
        raise ValueError(f"{name!r}: a paper row is listed twice.")
    if provenance is not None:
        starred = [row.method.endswith("*") for row in rows]
        if (provenance == "reproduced") != all(starred) or (provenance != "reproduced" and any(starred)):
            raise ValueError(
                f"{name!r}: provenance {provenance!r} does not match the rows: the paper marks its own "
                f"retrainings with '*', so 'reproduced' goes with starred methods and only with them."
            )
    return rows


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint and the paper rows it fills (one ``models:`` entry of the YAML)."""

    name: str
    backbone: str
    provenance: str
    rows: tuple[PaperRow, ...]
    base: str
    steps: int
    guidance_scale: float
    resolution: int
    reference: str
    scheduler: str | None = None
    scheduler_kwargs: dict = field(default_factory=dict)
    timesteps: tuple[int, ...] | None = None
    eta: float | None = None
    adapter: HubFile | None = None
    denoiser: HubFile | None = None
    custom_pipeline: str | None = None
    notes: str = ""

    def __post_init__(self):
        name = self.name
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{name!r}: a model name is lower-case letters, digits, '.' and '-'.")
        if self.backbone not in BACKBONES:
            raise ValueError(f"{name!r}: backbone must be one of {BACKBONES}; got {self.backbone!r}.")
        if self.provenance not in PROVENANCES:
            raise ValueError(f"{name!r}: provenance must be one of {PROVENANCES}; got {self.provenance!r}.")
        object.__setattr__(self, "rows", _check_rows(name, self.rows, self.provenance))
        for key in ("base", "reference"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise ValueError(f"{name!r}: {key} must be a non-empty string.")
        if not self.reference.startswith("https://"):
            raise ValueError(f"{name!r}: reference must be an https:// URL; got {self.reference!r}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(f"{name!r}: steps must be a positive integer; got {self.steps!r}.")
        if (
            isinstance(self.guidance_scale, bool)
            or not isinstance(self.guidance_scale, (int, float))
            or not math.isfinite(self.guidance_scale)
            or self.guidance_scale < 0
        ):
            raise ValueError(f"{name!r}: guidance_scale must be a number >= 0; got {self.guidance_scale!r}.")
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int):
            raise ValueError(f"{name!r}: resolution must be an integer; got {self.resolution!r}.")
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", tuple(self.timesteps))
            if len(self.timesteps) != self.steps:
                raise ValueError(
                    f"{name!r}: {len(self.timesteps)} timesteps {list(self.timesteps)} but steps={self.steps}."
                )
        if self.adapter is not None and not isinstance(self.adapter, HubFile):
            raise ValueError(f"{name!r}: adapter must be {{repo, file, scale}}.")
        if self.denoiser is not None and not isinstance(self.denoiser, HubFile):
            raise ValueError(f"{name!r}: denoiser must be {{repo, file}}.")
        if self.custom_pipeline is not None and (self.scheduler or self.timesteps):
            raise ValueError(f"{name!r}: a custom_pipeline brings its own sampler; drop scheduler/timesteps.")
        self._check_scheduler()
        try:
            self.to_spec()  # MultiStepSpec checks the rest (timesteps order, eta range, resolution ...)
        except ValueError as error:
            raise ValueError(f"{name!r}: {error}") from None

    def _check_scheduler(self) -> None:
        name = self.name
        if not isinstance(self.scheduler_kwargs, dict):
            raise ValueError(f"{name!r}: scheduler_kwargs must be a mapping; got {self.scheduler_kwargs!r}.")
        if self.scheduler is None:
            if self.scheduler_kwargs or self.eta is not None:
                raise ValueError(f"{name!r}: scheduler_kwargs and eta need a scheduler class (scheduler is null).")
            return
        try:
            cls = scheduler_class(self.scheduler)
        except ValueError as error:
            raise ValueError(f"{name!r}: {error}") from None
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(self.scheduler_kwargs) - accepted)
        if unknown:
            raise ValueError(f"{name!r}: {self.scheduler} takes no argument(s) {unknown}.")
        if self.eta is not None and "eta" not in inspect.signature(cls.step).parameters:
            raise ValueError(f"{name!r}: eta is set but {self.scheduler}.step takes no eta.")
        if self.timesteps is not None and "timesteps" not in inspect.signature(cls.set_timesteps).parameters:
            raise ValueError(f"{name!r}: {self.scheduler} does not accept explicit timesteps.")

    @property
    def nfe(self) -> int:
        """Denoiser evaluations per image: one per step, two with classifier-free guidance."""
        return self.steps * (2 if self.guidance_scale > 1 else 1)

    def to_spec(self, **overrides) -> MultiStepSpec:
        """The :class:`MultiStepSpec` that samples this model; ``overrides`` replace spec fields
        (e.g. ``source=`` a local copy of the base, ``adapter=`` a local LoRA folder)."""
        spec = MultiStepSpec(
            source=self.base,
            steps=self.steps,
            guidance_scale=float(self.guidance_scale),
            scheduler=self.scheduler,
            scheduler_kwargs=dict(self.scheduler_kwargs),
            timesteps=self.timesteps,
            adapter=self.adapter.repo if self.adapter else None,
            adapter_weight_name=self.adapter.file if self.adapter else None,
            adapter_scale=self.adapter.scale if self.adapter else 1.0,
            resolution=self.resolution,
            denoiser_weights=self.denoiser.repo if self.denoiser else None,
            denoiser_weight_name=self.denoiser.file if self.denoiser else None,
            eta=self.eta,
            custom_pipeline=self.custom_pipeline,
        )
        return dataclasses.replace(spec, **overrides) if overrides else spec


@dataclass(frozen=True)
class UnavailableModel:
    """Paper rows with no runnable public checkpoint, and why (one ``unavailable:`` entry)."""

    name: str
    backbone: str
    rows: tuple[PaperRow, ...]
    reason: str
    reference: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise ValueError(f"{self.name!r}: a name is lower-case letters, digits, '.' and '-'.")
        if self.backbone not in BACKBONES:
            raise ValueError(f"{self.name!r}: backbone must be one of {BACKBONES}; got {self.backbone!r}.")
        object.__setattr__(self, "rows", _check_rows(self.name, self.rows, None))
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError(f"{self.name!r}: reason must be a non-empty string.")
        if self.reference is not None and not str(self.reference).startswith("https://"):
            raise ValueError(f"{self.name!r}: reference must be an https:// URL; got {self.reference!r}.")


def _keys(where: str, raw, keys: dict) -> dict:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}.")
    unknown = sorted(set(raw) - keys["required"] - keys["optional"])
    missing = sorted(keys["required"] - set(raw))
    if unknown or missing:
        allowed = sorted(keys["required"] | keys["optional"])
        raise ValueError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}; allowed: {allowed}.")
    return raw


def _rows(where: str, raw) -> list[PaperRow]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: rows must be a list of {{table, method}}.")
    return [PaperRow(**_keys(f"{where} row {i}", row, ROW_KEYS)) for i, row in enumerate(raw)]


def _hub_file(where: str, raw, keys: dict) -> HubFile | None:
    return None if raw is None else HubFile(**_keys(where, raw, keys))


def _parse_model(name: str, raw) -> PublishedModel:
    where = f"models.{name}"
    raw = dict(_keys(where, raw, MODEL_KEYS))
    raw["rows"] = _rows(where, raw["rows"])
    raw["adapter"] = _hub_file(f"{where}.adapter", raw.get("adapter"), ADAPTER_KEYS)
    raw["denoiser"] = _hub_file(f"{where}.denoiser", raw.get("denoiser"), DENOISER_KEYS)
    if raw.get("scheduler_kwargs") is None:
        raw["scheduler_kwargs"] = {}
    return PublishedModel(name=name, **raw)


def _parse_unavailable(name: str, raw) -> UnavailableModel:
    where = f"unavailable.{name}"
    raw = dict(_keys(where, raw, UNAVAILABLE_KEYS))
    raw["rows"] = _rows(where, raw["rows"])
    return UnavailableModel(name=name, **raw)


def check_paper_rows(entries, results: str | os.PathLike | None = None) -> None:
    """Every row of every entry (models or unavailable) must exist in results.csv for the entry's
    backbone, and no row may be claimed by two entries."""
    table = pd.read_csv(results or results_path(), dtype=str, keep_default_na=False)
    known = set(zip(table["table"], table["backbone"], table["method"]))
    owner: dict[tuple, str] = {}
    for entry in entries:
        for row in entry.rows:
            key = (row.table, entry.backbone, row.method)
            if key not in known:
                raise ValueError(
                    f"{entry.name!r}: paper row (table {row.table!r}, backbone {entry.backbone!r}, method "
                    f"{row.method!r}) is not in {results or results_path()}."
                )
            if key in owner:
                raise ValueError(f"{entry.name!r}: paper row {key} is already claimed by {owner[key]!r}.")
            owner[key] = entry.name


def load_catalog(
    path: str | os.PathLike | None = None, *, check_paper: bool = True
) -> tuple[dict[str, PublishedModel], dict[str, UnavailableModel]]:
    """Both sections of the YAML, validated: ``(models, unavailable)`` keyed by short name."""
    path = Path(path) if path is not None else published_path()
    if not path.is_file():
        raise FileNotFoundError(f"no published-model list at {path}")
    raw = read_yaml(path)
    try:
        raw = _keys("top level", raw, {"required": {"models"}, "optional": {"unavailable"}})
        for section in ("models", "unavailable"):
            if not isinstance(raw.get(section) or {}, dict):
                raise ValueError(f"{section}: expected a mapping of name -> entry.")
        models = {name: _parse_model(str(name), entry) for name, entry in (raw["models"] or {}).items()}
        unavailable = {
            name: _parse_unavailable(str(name), entry) for name, entry in (raw.get("unavailable") or {}).items()
        }
        both = sorted(set(models) & set(unavailable))
        if both:
            raise ValueError(f"{both}: listed both under models and under unavailable.")
        if check_paper:
            check_paper_rows([*models.values(), *unavailable.values()])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    return models, unavailable


def load_published(path: str | os.PathLike | None = None, *, check_paper: bool = True) -> dict[str, PublishedModel]:
    """The runnable published checkpoints of ``path`` (default ``config/published.yaml``), by name."""
    return load_catalog(path, check_paper=check_paper)[0]


def load_unavailable(path: str | os.PathLike | None = None, *, check_paper: bool = True) -> dict[str, UnavailableModel]:
    """The paper rows without a runnable checkpoint, by name, each with its ``reason``."""
    return load_catalog(path, check_paper=check_paper)[1]


def paper_rows(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """One line per paper row the YAML covers: table, backbone, method, name, status
    (``runnable``/``unavailable``), provenance and, for unavailable rows, the reason (footnotes)."""
    models, unavailable = load_catalog(path)
    lines = [
        {
            "table": row.table,
            "backbone": m.backbone,
            "method": row.method,
            "name": m.name,
            "status": "runnable",
            "provenance": m.provenance,
            "reason": "",
        }
        for m in models.values()
        for row in m.rows
    ] + [
        {
            "table": row.table,
            "backbone": u.backbone,
            "method": row.method,
            "name": u.name,
            "status": "unavailable",
            "provenance": "",
            "reason": " ".join(u.reason.split()),
        }
        for u in unavailable.values()
        for row in u.rows
    ]
    return pd.DataFrame(lines, columns=["table", "backbone", "method", "name", "status", "provenance", "reason"])


def unavailable_reasons(path: str | os.PathLike | None = None) -> dict[tuple[str, str, str], str]:
    """``{(paper table, backbone, method): reason}`` of the paper rows without a runnable checkpoint:
    the footnote a report table prints on such a row (``dkd.report.build_table``'s ``reasons``)."""
    rows = paper_rows(path)
    rows = rows[rows["status"] == "unavailable"]
    return {(row.table, row.backbone, row.method): row.reason for row in rows.itertuples(index=False)}
