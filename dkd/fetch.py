"""Pretrained files a configuration needs, fetched once where there is network.

Compute nodes of many clusters have no network. The workflow's local rule ``fetch_model`` runs
:func:`fetch_all` on the login node for each model a config names (teachers from hub ids, the
evaluation models, published checkpoints) before any job that loads it. Hub files go to the
Hugging Face cache (``HF_HOME``; put it on a file system the compute nodes share), where the jobs'
own loading code (``from_pretrained``, ``hf_hub_download``, open_clip) finds them; run the jobs
with ``HF_HUB_OFFLINE=1`` (the README's two-step recipe: ``snakemake downloads`` with network,
then the rest offline), since a firewall that drops packets makes the hub client time out rather
than fall back to the cache. Each kind is fetched by the library that later loads it, so exactly the
files it loads are fetched:

* ``pipeline``: a diffusers pipeline on the hub, ``DiffusionPipeline.download`` (the components of
  ``model_index.json``, safetensors where the repo has them; with ``custom_pipeline`` also that
  diffusers community pipeline's code);
  ``without`` names components not to fetch (a denoiser that comes from another repo);
* ``hub_file``: one file of a hub repo, ``huggingface_hub.hf_hub_download`` (the HPS checkpoint, a
  published distilled U-Net or LoRA);
* ``hub_folder``: one folder of a hub repo, ``huggingface_hub.snapshot_download`` (PixArt-α 256's
  ``transformer/``, the only part its repo holds: ``dkd.backbones.components_source``);
* ``model_folder``: the config and weights of one diffusers model folder (``subfolder``, or the repo's
  root) at ``revision``, :func:`dkd.analysis.io.model_files` (the weight analysis of released models);
* ``open_clip``: open_clip weights ``source`` (model name) with ``tag`` (pretrained tag),
  ``open_clip.pretrained.download_pretrained``;
* ``transformers``: a transformers model repo at ``revision``, fetched by loading it
  (``AutoModel`` and ``AutoProcessor``: DreamBooth's DINO and CLIP models, ``dkd.metrics.subject``);
* ``hub_dataset``: one folder (``subfolder``) of a hub dataset at ``revision``,
  ``huggingface_hub.snapshot_download(repo_type="dataset")`` (a DreamBooth subject's photos);
* ``inception``: clean-fid's Inception-v3 torchscript file into the folder ``source``
  (resumable and atomic, its checksum recorded on first download and verified after:
  :mod:`dkd.data.download`; offline, its ``DataUnavailableError`` names the URL and folder).
  clean-fid itself downloads it to
  ``/tmp``, which is local to each node; :func:`dkd.metrics.fid.build_extractor` loads it from
  this folder instead (``inception_dir``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .data.download import RemoteFile, ensure_files, is_offline
from .io import atomic_write_text

KINDS = ("pipeline", "hub_file", "hub_folder", "model_folder", "open_clip", "inception", "transformers", "hub_dataset")
OPTIONS = {
    "pipeline": ("custom_pipeline", "without"),
    "hub_file": ("filename", "revision"),
    "hub_folder": ("subfolder",),
    "model_folder": ("subfolder", "revision"),
    "open_clip": ("tag",),
    "inception": (),
    "transformers": ("revision",),
    "hub_dataset": ("subfolder", "revision"),
}  # the fields each kind takes
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_FILE = "inception-2015-12-05.pt"  # the name clean-fid's InceptionV3W loads from its folder


class ModelUnavailableError(FileNotFoundError):
    """Pretrained files that are neither present nor downloadable here."""


@dataclass(frozen=True)
class ModelFiles:
    """One set of pretrained files: ``kind`` (see the module doc), ``source`` (hub id, open_clip
    model name, or the Inception folder), ``filename`` (``hub_file``), ``subfolder`` (``hub_folder``,
    ``model_folder``), ``revision`` (``hub_file``, ``model_folder``: a commit; None: main), ``tag``
    (``open_clip``), ``custom_pipeline`` (``pipeline``: a diffusers community pipeline name) and
    ``without`` (``pipeline``: components left out)."""

    kind: str
    source: str
    filename: str | None = None
    tag: str | None = None
    custom_pipeline: str | None = None
    subfolder: str | None = None
    without: tuple[str, ...] | None = None
    revision: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"model files kind must be one of {KINDS}; got {self.kind!r}.")
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"{self.kind}: source must be a non-empty string; got {self.source!r}.")
        needs = {"hub_file": "filename", "hub_folder": "subfolder", "open_clip": "tag", "hub_dataset": "subfolder"}.get(
            self.kind
        )
        if needs and not getattr(self, needs):
            raise ValueError(f"{self.kind} {self.source!r} needs {needs}.")
        extra = [
            f
            for f in ("filename", "tag", "custom_pipeline", "subfolder", "without", "revision")
            if f not in OPTIONS[self.kind] and getattr(self, f) is not None
        ]
        if extra:
            raise ValueError(f"{self.kind} {self.source!r}: {', '.join(extra)} do(es) not apply to this kind.")
        if self.without is not None:
            if isinstance(self.without, str) or not all(isinstance(name, str) and name for name in self.without):
                raise ValueError(f"{self.kind} {self.source!r}: without must be a list of component names.")
            object.__setattr__(self, "without", tuple(self.without))

    def describe(self) -> str:
        detail = self.filename or self.subfolder or self.tag or self.custom_pipeline
        detail = detail or (f"without {', '.join(self.without)}" if self.without else None)
        at = f" at {self.revision}" if self.revision else ""
        return f"{self.kind} {self.source}" + (f" ({detail})" if detail else "") + at

    def to_dict(self) -> dict:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if value is not None
        }


def fetch(files: ModelFiles, *, progress: bool = True) -> str:
    """The local path of ``files``, downloaded now unless already there (a local folder given as a
    ``pipeline`` source is returned as is). One :class:`ModelUnavailableError` naming the files
    when they cannot be had here (offline, or the download fails)."""
    if files.kind == "inception":
        hint = "or put the file there by hand"
        return str(
            ensure_files(
                [RemoteFile(INCEPTION_URL, INCEPTION_FILE)], directory=files.source, hint=hint, progress=progress
            )[0]
        )
    if files.kind == "pipeline" and Path(files.source).expanduser().is_dir():
        return str(Path(files.source).expanduser())
    if is_offline():
        raise ModelUnavailableError(
            f"{files.describe()}: offline (HF_HUB_OFFLINE is set) and not fetched yet. Fetch it where there is "
            "network (on a cluster: the login node, with HF_HOME on a file system the compute nodes share)."
        )
    try:
        return _download(files)
    except Exception as error:  # noqa: BLE001 - one clear error whatever the hub client or open_clip raises
        raise ModelUnavailableError(f"{files.describe()}: download failed: {type(error).__name__}: {error}") from error


def _download(files: ModelFiles) -> str:
    if files.kind == "pipeline":
        from diffusers import DiffusionPipeline

        from .sampling.samplers import community_pipeline_kwargs

        # with a community pipeline: its mirror file, which the jobs load too (no second fetch, no PyPI);
        # a component passed to download() (even as None) is not fetched
        left_out = dict.fromkeys(files.without or ())
        return str(
            DiffusionPipeline.download(files.source, **left_out, **community_pipeline_kwargs(files.custom_pipeline))
        )
    if files.kind == "hub_file":
        from huggingface_hub import hf_hub_download

        return str(hf_hub_download(files.source, files.filename, revision=files.revision))
    if files.kind == "model_folder":
        from .analysis.io import model_files

        return str(model_files(files.source, files.subfolder, files.revision)[0][0].parent)
    if files.kind == "transformers":  # fetched by loading it: the files transformers reads, no others
        from huggingface_hub import snapshot_download
        from transformers import AutoModel, AutoProcessor

        AutoModel.from_pretrained(files.source, revision=files.revision)
        AutoProcessor.from_pretrained(files.source, revision=files.revision)
        return str(snapshot_download(files.source, revision=files.revision, local_files_only=True))
    if files.kind == "hub_dataset":
        from huggingface_hub import snapshot_download

        root = snapshot_download(
            files.source, repo_type="dataset", revision=files.revision, allow_patterns=[f"{files.subfolder}/*"]
        )
        return str(Path(root, files.subfolder))
    if files.kind == "hub_folder":
        from huggingface_hub import snapshot_download

        return str(Path(snapshot_download(files.source, allow_patterns=[f"{files.subfolder}/*"]), files.subfolder))
    import open_clip

    config = open_clip.get_pretrained_cfg(files.source, files.tag)
    if not config:
        raise ValueError(f"open_clip knows no pretrained weights {files.tag!r} for {files.source!r}")
    return str(open_clip.pretrained.download_pretrained(config))


def published_files(spec) -> list[ModelFiles]:
    """The hub files a :class:`dkd.sampling.specs.MultiStepSpec` loads: its pipeline (and community
    pipeline), a replacement denoiser file, a LoRA file (diffusers' default name when none is given)."""

    def on_hub(source: str | None) -> bool:
        return bool(source) and not Path(source).expanduser().exists()

    files = [ModelFiles("pipeline", spec.source, custom_pipeline=spec.custom_pipeline)] if on_hub(spec.source) else []
    if on_hub(spec.denoiser_weights):
        files.append(ModelFiles("hub_file", spec.denoiser_weights, filename=spec.denoiser_weight_name))
    if on_hub(spec.adapter):
        files.append(
            ModelFiles(
                "hub_file", spec.adapter, filename=spec.adapter_weight_name or "pytorch_lora_weights.safetensors"
            )
        )
    return files


def files_for(what: str, **options) -> list[ModelFiles]:
    """The pretrained files of one thing the workflow loads (its rule ``fetch_model`` names it, so
    that the Snakemake process itself needs no ``dkd`` import):

    * ``teacher``, ``source=<hub id>``, ``backbone=<name>``: the teacher's diffusers pipeline (a repo
      holding only the denoiser: that folder, and the rest of its components pipeline);
    * ``denoiser``, ``source=<hub id>``, ``backbone=<name>``: only the denoiser folder of a pipeline (a
      student's start, ``student_init``: SD-Turbo's U-Net);
    * ``published``, ``name=<entry>``, ``catalog=<yaml>``: a published checkpoint's files;
    * ``released``, ``name=<pair>``, ``catalog=<yaml>``: a released pair's teacher and one-step weights
      (``dkd.analysis.released``; parts given as local paths are not fetched);
    * ``clip``: the CLIP-score model (open_clip ViT-g-14 ``laion2b_s12b_b42k``);
    * ``scorer``: the clamped CLIP loss's decoder and model (TAESD; open_clip ViT-B-32, ``dkd.train.scorers``);
    * ``hps``, ``version=<v2.0|v2.1>``: the HPS checkpoint (its ViT-H-14 needs no other weights);
    * ``inception``, ``folder=<dir>``: clean-fid's Inception file, into ``folder``;
    * ``controlnet``, ``source=<hub id or folder>``, ``revision``, ``image``: a ControlNet's model folder
      and its ``hf://`` source image (``dkd.downstream.controlnet.run.controlnet_files``);
    * ``dreambooth``, ``subjects=[...]`` and ``dataset={source, revision}`` (the subjects' photos) and/or
      ``metric_models={name: {source, revision}}`` (DINO, CLIP): ``dkd.downstream.dreambooth.data.dreambooth_files``.
    """
    if what == "teacher":
        from .backbones import backbone_spec, components_source

        source, backbone = options["source"], options.get("backbone")
        parts = components_source(backbone, source) if backbone else None
        if parts is None:
            return [ModelFiles("pipeline", source)]
        subfolder = backbone_spec(backbone).denoiser_subfolder
        return [
            ModelFiles("pipeline", parts, without=(subfolder,)),
            ModelFiles("hub_folder", source, subfolder=subfolder),
        ]
    if what == "published":
        from .sampling.published import load_published

        entries = load_published(options.get("catalog"), check_paper=options.get("catalog") is None)
        if options["name"] not in entries:
            raise ValueError(f"no published checkpoint {options['name']!r} in {options.get('catalog')}")
        return published_files(entries[options["name"]].to_spec())
    if what == "released":
        from .analysis.released import released_files

        return released_files(options["name"], options.get("catalog"))
    if what == "clip":
        from .metrics.clip import MODEL, PRETRAINED

        return [ModelFiles("open_clip", MODEL, tag=PRETRAINED)]
    if what == "denoiser":  # only a pipeline's denoiser folder (a student's start: dkd.train.config.student_init)
        from .backbones import backbone_spec

        return [
            ModelFiles("hub_folder", options["source"], subfolder=backbone_spec(options["backbone"]).denoiser_subfolder)
        ]
    if what == "scorer":
        from .train.scorers import CLIP_MODEL, CLIP_PRETRAINED, TAESD

        return [
            ModelFiles("hub_file", TAESD, filename="config.json"),
            ModelFiles("hub_file", TAESD, filename="diffusion_pytorch_model.safetensors"),
            ModelFiles("open_clip", CLIP_MODEL, tag=CLIP_PRETRAINED),
        ]
    if what == "hps":
        from .metrics.hps import CHECKPOINTS, DEFAULT_VERSION, HUB_REPO

        version = options.get("version") or DEFAULT_VERSION
        if version not in CHECKPOINTS:
            raise ValueError(f"HPS version must be one of {sorted(CHECKPOINTS)}; got {version!r}")
        return [ModelFiles("hub_file", HUB_REPO, filename=CHECKPOINTS[version])]
    if what == "inception":
        return [ModelFiles("inception", str(options["folder"]))]
    if what == "controlnet":  # the controlnet target's ControlNet and hf:// source image
        from .downstream.controlnet.run import controlnet_files

        return controlnet_files(options["source"], options.get("revision"), options.get("image"))
    if what == "dreambooth":  # the dreambooth target's subject photos and subject-metric models
        from .downstream.dreambooth.data import dreambooth_files

        return dreambooth_files(**options)
    raise ValueError(
        f"unknown pretrained files {what!r}: one of teacher, denoiser, published, released, clip, scorer, hps, "
        "inception, controlnet, dreambooth"
    )


def fetch_all(
    files: Sequence[ModelFiles | dict], *, out_file: str | os.PathLike | None = None, progress: bool = True
) -> list[dict]:
    """:func:`fetch` each of ``files`` (``ModelFiles`` or their ``to_dict()``); returns one row per
    item with its local ``path``, also written to ``out_file`` (JSON, atomically) when given."""
    items = [item if isinstance(item, ModelFiles) else ModelFiles(**item) for item in files]
    rows = [{**item.to_dict(), "path": fetch(item, progress=progress)} for item in items]
    if out_file is not None:
        atomic_write_text(out_file, json.dumps({"files": rows}, indent=2))
    return rows
