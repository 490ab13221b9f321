"""Released one-step models against their multi-step teachers (``config/released.yaml``): the weight
analysis of the paper's Fig. 2a/2b (section 1; DMD2 against SD1.5, PixArt-α DMD against PixArt-α) and
of Figs. 10-13 (appendix E), on the weights their authors released.

Each ``pairs:`` entry names the teacher's denoiser folder and the one-step model, each on the hub at a
pinned ``revision`` (or a local path, for tests and offline copies). The one-step model comes as

* ``kind: model``: a full denoiser folder (``subfolder``; SD-Turbo, SwiftBrush, InstaFlow, PixArt DiTs);
* ``kind: state_dict``: one file holding the whole denoiser's state dict under the teacher's key names
  (DMD2's ``pytorch_model.bin``, loaded with torch's ``weights_only``);
* ``kind: lora``: a LoRA release merged into the teacher at ``scale`` (its model card's), with
  diffusers' own LoRA loader (which converts the Kohya and other formats) and ``fuse_lora``: the
  weights a pipeline samples with after ``load_lora_weights`` + ``fuse_lora(lora_scale=scale)``;
* ``kind: pickle``: a pickled generator (SiD-LSG's EDM-style snapshots), read without running any code
  from the file (:mod:`dkd.analysis.pickles`): ``key`` picks the network in the snapshot (SiD-LSG: ``ema``,
  a pickled diffusers U-Net), ``module`` (optional) a sub-module of it.

``unavailable:`` lists what the paper shows but cannot be analysed here (no public weights), with the
reason. Every entry is validated when loaded; an unknown or missing key is one ``ValueError``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones import config_dir
from ..io import read_yaml
from .io import hub_commit, hub_file, load_state_dict, model_files

FAMILIES = {"sd": ("unet", "UNet2DConditionModel"), "pixart": ("transformer", "PixArtTransformer2DModel")}
KINDS = ("model", "state_dict", "lora", "pickle")
NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")

PAIR_KEYS = {"required": {"backbone", "family", "figure", "teacher", "one_step", "reference"}, "optional": {"notes"}}
UNAVAILABLE_KEYS = {"required": {"backbone", "figure", "reason"}, "optional": {"reference"}}
SOURCE_KEYS = {"repo", "revision", "subfolder", "file"}
ONE_STEP_KEYS = {
    "model": {"required": {"kind", "repo", "revision"}, "optional": {"subfolder"}},
    "state_dict": {"required": {"kind", "repo", "revision", "file"}, "optional": set()},
    "lora": {"required": {"kind", "repo", "revision", "file", "scale"}, "optional": set()},
    "pickle": {"required": {"kind", "repo", "revision", "file", "key"}, "optional": {"module"}},
}


def released_path() -> Path:
    """``config/released.yaml`` of the repository (``$DKD_CONFIG_DIR`` overrides the folder)."""
    return config_dir() / "released.yaml"


def _text(where: str, key: str, value, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key} must be a non-empty string; got {value!r}.")


@dataclass(frozen=True)
class Source:
    """A model part: ``repo`` (hub id or local folder) at ``revision`` (a 40-hex commit; None: the hub's
    ``main`` when fetched, the commit recorded in the result), a diffusers model ``subfolder`` or one ``file``."""

    repo: str
    revision: str | None = None
    subfolder: str | None = None
    file: str | None = None

    def __post_init__(self):
        where = f"source {self.repo!r}"
        _text("source", "repo", self.repo)
        for key in ("subfolder", "file"):
            _text(where, key, getattr(self, key), optional=True)
        if self.revision is not None and not (isinstance(self.revision, str) and COMMIT.match(self.revision)):
            raise ValueError(
                f"{where}: revision must be a full 40-hex commit (or null: the hub's main); got {self.revision!r}."
            )
        if self.subfolder and self.file:
            raise ValueError(f"{where}: a source is a model folder (subfolder) or one file, not both.")

    def describe(self) -> str:
        part = self.file or self.subfolder or "(root)"
        return f"{self.repo}:{part}@{self.revision or 'main'}"


@dataclass(frozen=True)
class OneStep:
    """The one-step model of a pair: ``kind`` (see the module doc) and its ``source``; ``scale`` (lora),
    ``key`` and ``module`` (pickle)."""

    kind: str
    source: Source
    scale: float = 1.0
    key: str | None = None
    module: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"one_step kind must be one of {KINDS}; got {self.kind!r}.")
        if self.kind != "model" and not self.source.file:
            raise ValueError(f"one_step kind {self.kind!r} needs a file.")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float) or not math.isfinite(self.scale):
            raise ValueError(f"one_step scale must be a finite number; got {self.scale!r}.")


@dataclass(frozen=True)
class ReleasedPair:
    """One released one-step model and its teacher (a ``pairs:`` entry)."""

    name: str
    backbone: str  # the table block of the pair (sd15, sd21, pixart512 ...): its results folder
    family: str  # sd (U-Net) or pixart (DiT)
    figure: str  # the paper figure(s) the pair is in
    teacher: Source
    one_step: OneStep
    reference: str
    notes: str = ""

    def __post_init__(self):
        where = f"pairs.{self.name}"
        if not NAME.match(self.name):
            raise ValueError(f"{where}: a name is lower-case letters, digits, '.' and '-'.")
        if self.family not in FAMILIES:
            raise ValueError(f"{where}: family must be one of {sorted(FAMILIES)}; got {self.family!r}.")
        for key in ("backbone", "figure", "reference"):
            _text(where, key, getattr(self, key))
        if not self.reference.startswith("https://"):
            raise ValueError(f"{where}: reference must be an https:// URL; got {self.reference!r}.")
        if self.teacher.file:
            raise ValueError(f"{where}: the teacher is a model folder (subfolder), not a file.")

    @property
    def subfolder(self) -> str:
        """The denoiser folder of a diffusers pipeline of this family (unet / transformer)."""
        return FAMILIES[self.family][0]


@dataclass(frozen=True)
class UnavailablePair:
    """A model of the paper's figures that cannot be analysed here, and why."""

    name: str
    backbone: str
    figure: str
    reason: str
    reference: str | None = None

    def __post_init__(self):
        where = f"unavailable.{self.name}"
        for key in ("backbone", "figure", "reason"):
            _text(where, key, getattr(self, key))


def _keys(where: str, raw, keys: dict) -> dict:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping; got {raw!r}.")
    unknown, missing = sorted(set(raw) - keys["required"] - keys["optional"]), sorted(keys["required"] - set(raw))
    if unknown or missing:
        allowed = sorted(keys["required"] | keys["optional"])
        raise ValueError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}; allowed: {allowed}.")
    return dict(raw)


def _source(where: str, raw) -> Source:
    raw = _keys(where, raw, {"required": {"repo", "revision"}, "optional": SOURCE_KEYS - {"repo", "revision"}})
    try:
        return Source(**raw)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _one_step(where: str, raw) -> OneStep:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind not in ONE_STEP_KEYS:
        raise ValueError(f"{where}: kind must be one of {KINDS}; got {kind!r}.")
    raw = _keys(where, raw, ONE_STEP_KEYS[kind])
    options = {key: raw.pop(key) for key in ("kind", "scale", "key", "module") if key in raw}
    try:
        return OneStep(source=_source(where, raw), **options)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def parse_catalog(data, *, where: str = "released catalog") -> tuple[dict, dict]:
    """``({name: ReleasedPair}, {name: UnavailablePair})`` of a catalog's parsed YAML."""
    data = _keys(where, data, {"required": {"pairs"}, "optional": {"unavailable"}})
    pairs, unavailable = {}, {}
    for name, raw in (data["pairs"] or {}).items():
        raw = _keys(f"pairs.{name}", raw, PAIR_KEYS)
        raw["teacher"] = _source(f"pairs.{name}.teacher", raw["teacher"])
        raw["one_step"] = _one_step(f"pairs.{name}.one_step", raw["one_step"])
        pairs[name] = ReleasedPair(name=name, **raw)
    for name, raw in (data.get("unavailable") or {}).items():
        unavailable[name] = UnavailablePair(name=name, **_keys(f"unavailable.{name}", raw, UNAVAILABLE_KEYS))
    twice = sorted(set(pairs) & set(unavailable))
    if twice:
        raise ValueError(f"{where}: {twice} are both pairs and unavailable.")
    return pairs, unavailable


def load_catalog(path: str | os.PathLike | None = None) -> tuple[dict, dict]:
    """The pairs and unavailable entries of ``config/released.yaml`` (or ``path``), validated."""
    path = Path(path or released_path())
    try:
        return parse_catalog(read_yaml(path), where=str(path))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def load_pair(name: str, path: str | os.PathLike | None = None) -> ReleasedPair:
    pairs, unavailable = load_catalog(path)
    if name in unavailable:
        raise ValueError(f"{name!r} cannot be analysed: {unavailable[name].reason}")
    if name not in pairs:
        raise ValueError(f"no released pair {name!r} in {path or released_path()}; known: {sorted(pairs)}")
    return pairs[name]


def _merged_lora(pair: ReleasedPair, teacher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The teacher's denoiser with the LoRA release fused at its scale, as a pipeline's
    ``load_lora_weights`` + ``fuse_lora(lora_scale=scale)`` gives it (diffusers converts the format)."""
    import diffusers
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    if pair.family != "sd":
        raise ValueError(f"{pair.name}: LoRA releases are read for SD U-Nets only (family sd).")
    source = pair.one_step.source
    config = model_files(pair.teacher.repo, pair.teacher.subfolder, pair.teacher.revision)[1]
    if config is None:
        raise FileNotFoundError(f"{pair.name}: the teacher {pair.teacher.describe()} has no config.json")
    model = getattr(diffusers, FAMILIES[pair.family][1]).from_config(
        getattr(diffusers, FAMILIES[pair.family][1]).load_config(config.parent)
    )
    model.load_state_dict({k: v.float() for k, v in teacher.items()}, strict=True)
    file = hub_file(source.repo, source.file, source.revision)
    state, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
        str(file.parent), weight_name=file.name, return_lora_metadata=True
    )
    if not any(key.startswith("unet.") for key in state):
        raise ValueError(f"{pair.name}: {source.describe()} holds no U-Net LoRA weights")
    StableDiffusionLoraLoaderMixin.load_lora_into_unet(
        state, network_alphas=alphas, unet=model, adapter_name="released", metadata=metadata
    )
    model.fuse_lora(lora_scale=pair.one_step.scale)
    model.unload_lora()
    return {k: v.detach() for k, v in model.state_dict().items()}


def pair_states(pair: ReleasedPair) -> tuple[dict, dict, dict]:
    """The teacher's and the one-step model's denoiser state dicts, and their provenance (sources
    and the commits they were read at)."""
    teacher_files = model_files(pair.teacher.repo, pair.teacher.subfolder, pair.teacher.revision)[0]
    teacher = load_state_dict(pair.teacher.repo, pair.teacher.subfolder, pair.teacher.revision)
    one_step, source = pair.one_step, pair.one_step.source
    if one_step.kind == "model":
        files = model_files(source.repo, source.subfolder, source.revision)[0]
        student = load_state_dict(source.repo, source.subfolder, source.revision)
    elif one_step.kind == "lora":
        files, student = [hub_file(source.repo, source.file, source.revision)], _merged_lora(pair, teacher)
    else:
        files = [hub_file(source.repo, source.file, source.revision)]
        if one_step.kind == "pickle":
            from .pickles import read_pickle_tensors

            student = read_pickle_tensors(files[0], key=one_step.key, module=one_step.module)
        else:
            student = load_state_dict(files[0])
        _check_same_keys(pair, teacher, student)
    provenance = {
        "teacher": pair.teacher.describe(),
        "teacher_commit": hub_commit(teacher_files[0]),
        "one_step": f"{one_step.kind} {source.describe()}"
        + (f" x {one_step.scale:g}" if one_step.kind == "lora" else ""),
        "one_step_commit": hub_commit(files[0]),
    }
    return teacher, student, provenance


def _check_same_keys(pair: ReleasedPair, teacher: dict, student: dict) -> None:
    missing, extra = sorted(set(teacher) - set(student)), sorted(set(student) - set(teacher))
    if missing or extra:
        raise ValueError(
            f"{pair.name}: the one-step weights do not match the teacher's denoiser: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})"
        )


def released_files(name: str, catalog: str | os.PathLike | None = None) -> list:
    """The hub files a pair's analysis reads (``dkd.fetch.ModelFiles``): the teacher's denoiser folder
    and the one-step weights, each at its revision; parts that are local paths are left out."""
    from ..fetch import ModelFiles

    pair, files = load_pair(name, catalog), []
    if not Path(pair.teacher.repo).expanduser().exists():
        files.append(
            ModelFiles(
                "model_folder", pair.teacher.repo, subfolder=pair.teacher.subfolder, revision=pair.teacher.revision
            )
        )
    source = pair.one_step.source
    if not Path(source.repo).expanduser().exists():
        if pair.one_step.kind == "model":
            files.append(ModelFiles("model_folder", source.repo, subfolder=source.subfolder, revision=source.revision))
        else:
            files.append(ModelFiles("hub_file", source.repo, filename=source.file, revision=source.revision))
    return files
