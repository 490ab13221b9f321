"""HPSv2 benchmark score (Table 6; ``docs/reference.md`` section 4), with open_clip.

HPSv2 is open_clip ``ViT-H-14`` fine-tuned on human preferences; its weights are the
checkpoint ``HPS_v2_compressed.pt`` (v2.0, what SiD-LSG and the paper report) or
``HPS_v2.1_compressed.pt`` (v2.1) of the hub repo ``xswu/HPSv2``. v2.0 and v2.1 scores are not
comparable, so the version travels with every result.

Why not the ``hpsv2`` package: ``hpsv2==1.2.0`` and its fork ``hpsv2x==1.2.0`` both require
``pytest==7.2.0`` and ``protobuf<4`` (pip cannot resolve them next to our ``pytest==9.2.0``),
and the ``hpsv2`` wheel misses the BPE vocabulary of its vendored open_clip (tgxs002/HPSv2#30).
This module reproduces what its scorer does with open_clip_torch, step by step:

* model -- ``hpsv2.img_score.initialize_model``: ``create_model_and_transforms("ViT-H-14",
  "laion2B-s32B-b79K", precision="amp", light_augmentation=True, ...)``, then ``score`` /
  ``evaluation.evaluate``: ``model.load_state_dict(torch.load(cp)["state_dict"])`` (strict).
  Here: ``open_clip.create_model("ViT-H-14", pretrained=None)`` (the LAION weights hpsv2 loads
  first are entirely overwritten by the strict load, so they are skipped) and the same strict
  load. The vendored and the open_clip 3.3.0 ``ViT-H-14`` have the same config and the same
  686 state-dict keys and shapes. ``precision="amp"`` keeps fp32 weights.
* preprocessing -- ``preprocess_val`` with ``light_augmentation=True``, i.e. the vendored
  ``image_transform(224, is_train=False, resize_longest_max=True)``: :class:`HPSPreprocess`.
* tokenizer -- ``get_tokenizer("ViT-H-14")``: the CLIP BPE tokenizer, 77 tokens, which is
  ``open_clip.get_tokenizer("ViT-H-14")``.
* score -- ``evaluation.evaluate_benchmark``: under ``torch.cuda.amp.autocast()`` (fp16 on
  CUDA; on a CPU it is a no-op, fp32), ``model(images, texts)`` gives L2-normalised image and
  text features, ``logits = image_features @ text_features.T * 100``, score of image ``i`` =
  ``logits[i, i]``. So the score is 100 x cosine, e.g. 26.47 (not 0.2647 as ``hpsv2.score``).
* benchmark -- per style the mean over its 800 images (hpsv2 prints the mean of the 10 means of
  80 consecutive images, the same number for 800 images, and their std, kept here as
  ``chunk_std``); the average is the mean of the style means (hpsv2 pools all scores: the
  same for equal counts, which :func:`hps_benchmark` enforces per style).

The scoring model, transform and tokenizer are arguments, so tests run a tiny open_clip model;
:func:`load_hps` builds the real ones.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode
from tqdm.auto import tqdm

from ..io import atomic_write_text
from ..vocabulary import HPSV2_STYLES
from .images import to_rgb

MODEL = "ViT-H-14"
HUB_REPO = "xswu/HPSv2"
CHECKPOINTS = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
DEFAULT_VERSION = "v2.0"
STYLES = HPSV2_STYLES  # the HPD v2 benchmark (hub dataset zhwang/HPDv2, benchmark/<style>.json)
IMAGE_SUFFIXES = (".jpg", ".png")
BATCH_SIZE = 20  # hpsv2.evaluation.evaluate's default
CHUNK = 80  # hpsv2's evaluate_benchmark averages means of 80 consecutive images
SCALE = 100.0
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.constants.OPENAI_DATASET_MEAN
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)  # open_clip.constants.OPENAI_DATASET_STD
ImageLike = Image.Image | str | os.PathLike


@dataclass(frozen=True)
class HPSPreprocess:
    """hpsv2's evaluation transform: ``Image -> (3, size, size)`` float tensor.

    Mirrors the vendored ``open_clip.transform.image_transform(size, is_train=False,
    resize_longest_max=True)``: ``ToTensor`` (values in [0, 1]); ``ResizeMaxSize``: scale the
    long side to ``size`` (new sides ``round(side * size / long_side)``, Python rounding) with a
    bicubic *tensor* resize (antialiased, torchvision's default since 0.17), then pad with 0
    (black) to a square, ``pad // 2`` before and the rest after; ``Normalize(mean, std)``
    (OpenAI's statistics; hpsv2's ViT-H-14 defines none of its own). Not clamped after the
    bicubic resize, as in hpsv2.

    Two deliberate differences, both where hpsv2 would crash: an RGBA image is converted to RGB
    (hpsv2 keeps 4 channels, which the 3-channel patch embedding rejects), and an image whose
    long side already equals ``size`` is still padded to a square (hpsv2 skips the pad then).
    """

    size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"HPSPreprocess.size must be a positive int, got {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"HPSPreprocess.mean/std need 3 values (std > 0); got {self.mean}, {self.std}")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        tensor = TF.to_tensor(image.convert("RGB"))
        height, width = tensor.shape[1:]
        scale = self.size / float(max(height, width))
        if scale != 1.0:
            height, width = round(height * scale), round(width * scale)
            tensor = TF.resize(tensor, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)
        pad_h, pad_w = self.size - height, self.size - width
        if pad_h or pad_w:
            tensor = TF.pad(tensor, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
        return TF.normalize(tensor, list(self.mean), list(self.std))


@dataclass(frozen=True)
class HPSModel:
    """What :func:`load_hps` returns: the scorer and the labels that go with its results.

    ``hps_scores(images, prompts, **hps.scoring)``;
    ``hps_benchmark(folder, prompts_dir, **hps.scoring, **hps.labels)``.
    """

    model: torch.nn.Module
    preprocess: Callable = field(repr=False)
    tokenizer: Callable = field(repr=False)
    version: str
    checkpoint: Path
    model_name: str = MODEL

    @property
    def scoring(self) -> dict:
        return {"model": self.model, "preprocess": self.preprocess, "tokenizer": self.tokenizer}

    @property
    def labels(self) -> dict:
        return {"version": self.version, "checkpoint": self.checkpoint.name, "model_name": self.model_name}


def _check_version(version: str) -> str:
    if version not in CHECKPOINTS:
        raise ValueError(f"HPS version must be one of {sorted(CHECKPOINTS)}, got {version!r}")
    return CHECKPOINTS[version]


def checkpoint_path(version: str = DEFAULT_VERSION, checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint file of ``version``: ``checkpoint`` if given, else the hub file (cached).

    ``huggingface_hub.hf_hub_download("xswu/HPSv2", CHECKPOINTS[version])`` honours
    ``HF_HUB_OFFLINE`` / ``HF_HOME``; a file that is neither cached nor downloadable raises one
    ``FileNotFoundError`` saying where to get it and how to pass it. A given file named like
    the *other* version's checkpoint raises (v2.0 and v2.1 scores are not comparable).
    """
    filename = _check_version(version)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"HPS {version} checkpoint {str(path)!r} does not exist (or is not a file)")
        others = {name: v for v, name in CHECKPOINTS.items() if v != version}
        if path.name in others:
            raise ValueError(
                f"checkpoint {str(path)!r} is the HPS {others[path.name]} file but version={version!r}; "
                f"pass version={others[path.name]!r} or the {filename} file"
            )
        return path
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(huggingface_hub.hf_hub_download(HUB_REPO, filename))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        raise FileNotFoundError(
            f"HPS {version} checkpoint {filename} is not in the Hugging Face cache and cannot be downloaded "
            f"(offline: {type(error).__name__}). Download https://huggingface.co/{HUB_REPO}/resolve/main/{filename} "
            f"on a machine with network access (e.g. `hf download {HUB_REPO} {filename}`), then either copy the "
            f"hub cache (HF_HOME) here or pass its path: load_hps({version!r}, checkpoint='/path/to/{filename}')"
        ) from None


def read_state_dict(path: str | os.PathLike) -> dict:
    """The state dict of an HPS checkpoint (``{"state_dict": ...}`` as hpsv2 saves it, or a bare one).

    Loaded on the CPU with ``weights_only=True`` (tensors only, no code runs).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(
            f"HPS checkpoint {str(path)!r} is not a readable PyTorch state dict (truncated download?): {error}"
        ) from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"HPS checkpoint {str(path)!r} holds no state dict of tensors (key 'state_dict')")
    return state


def load_hps(
    version: str = DEFAULT_VERSION, checkpoint: str | os.PathLike | None = None, *, device=None, model_name: str = MODEL
) -> HPSModel:
    """HPSv2 ``version`` ("v2.0" or "v2.1") as an :class:`HPSModel`, in eval mode on ``device``.

    ``checkpoint``: a local ``HPS_v2*_compressed.pt``; None fetches it with
    :func:`checkpoint_path`. The weights are loaded strictly into open_clip's ``model_name``
    (``ViT-H-14``; another registered open_clip config only for tests), in fp32:
    :func:`hps_scores` adds hpsv2's fp16 autocast on CUDA. ViT-H-14 needs ~4 GB of memory.
    """
    import open_clip

    path = checkpoint_path(version, checkpoint)
    state = read_state_dict(path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = open_clip.create_model(model_name, pretrained=None, precision="fp32", device=device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = str(error)[:600]
        raise ValueError(f"HPS checkpoint {str(path)!r} does not fit open_clip {model_name}: {detail}") from None
    del state
    model = model.eval().requires_grad_(False)
    size = model.visual.image_size
    preprocess = HPSPreprocess(size=int(size[0] if isinstance(size, (tuple, list)) else size))
    return HPSModel(model, preprocess, open_clip.get_tokenizer(model_name), version, path, model_name)


def hps_scores(
    images: Sequence[ImageLike],
    prompts: Sequence[str],
    *,
    model: torch.nn.Module,
    preprocess: Callable,
    tokenizer: Callable,
    batch_size: int = BATCH_SIZE,
    device=None,
    autocast: bool = True,
    progress: bool = False,
    desc: str = "HPSv2",
) -> np.ndarray:
    """HPS of image ``i`` for ``prompts[i]``: ``100 * cos(encode_image, encode_text)`` (float64 array).

    As hpsv2's ``evaluate_benchmark``: a batch of ``preprocess``ed images and ``tokenizer``
    tokens; features from ``model.encode_image`` / ``encode_text`` with ``normalize=True``
    (what open_clip's ``CLIP.forward`` returns); ``logits = image_features @ text_features.T
    * 100``; the diagonal. With ``autocast`` and the model on CUDA this runs under fp16
    autocast, as hpsv2's ``torch.cuda.amp.autocast()`` (so scores carry fp16 rounding, ~0.02).
    Inputs go to ``device`` (default: the model's).
    """
    if len(images) != len(prompts):
        raise ValueError(f"HPS needs one prompt per image; got {len(images)} images and {len(prompts)} prompts")
    if len(images) == 0:
        raise ValueError("HPS of an empty image set")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    parameter = next(model.parameters())
    device = torch.device(parameter.device if device is None else device)
    amp = torch.autocast("cuda", dtype=torch.float16) if autocast and device.type == "cuda" else nullcontext()
    model.eval()
    scores = []
    starts = range(0, len(images), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
            pixels = torch.stack([preprocess(to_rgb(image)) for image in images[start : start + batch_size]])
            tokens = tokenizer(list(prompts[start : start + batch_size])).to(device)
            with amp:
                image_features = model.encode_image(pixels.to(device, parameter.dtype), normalize=True)
                text_features = model.encode_text(tokens, normalize=True)
                logits = image_features @ text_features.T * SCALE
            scores.append(torch.diagonal(logits).double().cpu())
    return torch.cat(scores).numpy()


def read_prompts(prompts_dir: str | os.PathLike, style: str) -> list[str]:
    """The prompts of ``style``: ``<prompts_dir>/<style>.txt`` (one a line; prompt ``i`` on line
    ``i + 1``), else ``<style>.json`` (a JSON list of strings, the hub's ``benchmark/<style>.json``)."""
    folder = Path(prompts_dir)
    text_file, json_file = folder / f"{style}.txt", folder / f"{style}.json"
    if text_file.is_file():
        # split on "\n" only: str.splitlines would also break prompts at \x85, \u2028, form feeds ...
        prompts = [line.removesuffix("\r") for line in text_file.read_text(encoding="utf-8").split("\n")]
        if prompts[-1] == "":
            prompts.pop()
        source = text_file
    elif json_file.is_file():
        try:
            prompts = json.loads(json_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{str(json_file)!r} is not valid JSON: {error}") from None
        source = json_file
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{str(json_file)!r} must be a JSON list of prompt strings")
    else:
        raise FileNotFoundError(f"no prompts for style {style!r}: neither {str(text_file)!r} nor {str(json_file)!r}")
    blank = [i for i, prompt in enumerate(prompts) if not prompt.strip()]
    if not prompts or blank:
        where = f"prompt {blank[0]} (line {blank[0] + 1}) is blank" if blank else "it is empty"
        raise ValueError(f"{str(source)!r}: {where}")
    return prompts


def style_images(folder: str | os.PathLike, style: str, count: int) -> list[Path]:
    """``<folder>/<style>/<i:05d>.jpg`` (or ``.png``) for ``i < count``, in index order.

    Every index needs exactly one image, and no other image (``.jpg``/``.png``) may be there:
    a missing, duplicated or extra file raises one error naming the style and the files.
    """
    directory = Path(folder) / style
    if not directory.is_dir():
        raise FileNotFoundError(f"HPS style {style!r}: image folder {str(directory)!r} does not exist")
    found: dict[int, list[Path]] = {}
    extra = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if re.fullmatch(r"\d{5,}", path.stem) and int(path.stem) < count:
            found.setdefault(int(path.stem), []).append(path)
        else:
            extra.append(path.name)
    missing = [f"{i:05d}.jpg/.png" for i in range(count) if i not in found]
    doubled = [" and ".join(p.name for p in paths) for paths in found.values() if len(paths) > 1]
    if missing or doubled or extra:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if doubled:
            problems.append(f"{len(doubled)} indices with two images (e.g. {doubled[0]})")
        if extra:
            problems.append(f"{len(extra)} images beyond the prompts or misnamed (e.g. {', '.join(extra[:3])})")
        raise ValueError(
            f"HPS style {style!r}: {str(directory)!r} must hold <index:05d>.jpg/.png for each of its {count} "
            f"prompts; {'; '.join(problems)}"
        )
    return [found[i][0] for i in range(count)]


def style_summary(scores: np.ndarray, *, chunk: int = CHUNK) -> dict:
    """``{"mean", "count", "chunk_std"}`` of one style's scores; ``chunk_std`` is the std
    (``np.std``, ddof 0) of the means of consecutive ``chunk``-image groups that hpsv2 prints."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {scores.shape}")
    chunk_means = [scores[i : i + chunk].mean() for i in range(0, scores.size, chunk)]
    return {"mean": float(scores.mean()), "count": int(scores.size), "chunk_std": float(np.std(chunk_means))}


def hps_benchmark(
    folder: str | os.PathLike,
    prompts_dir: str | os.PathLike,
    *,
    model: torch.nn.Module,
    preprocess: Callable,
    tokenizer: Callable,
    version: str,
    checkpoint: str,
    model_name: str = MODEL,
    styles: Sequence[str] = STYLES,
    batch_size: int = BATCH_SIZE,
    device=None,
    autocast: bool = True,
    out_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """The HPSv2 benchmark of the images under ``folder`` (Table 6).

    Every style's layout (:func:`read_prompts`, :func:`style_images`) is checked before any
    image is scored. ``version`` / ``checkpoint`` (file name) / ``model_name`` label the
    result: pass :attr:`HPSModel.labels`. Returns ``{"per_style": {style: mean}, "average"
    (mean of the style means), "count": {style: n}, "chunk_std": {style: std}, "version",
    "model", "checkpoint", "scale": 100, "styles", "batch_size", "images", "prompts"}``,
    written atomically as JSON to ``out_file`` if given.
    """
    _check_version(version)
    styles = list(styles)
    if not styles or len(set(styles)) != len(styles):
        raise ValueError(f"styles must be distinct and non-empty, got {styles}")
    layout = {}
    for style in styles:
        prompts = read_prompts(prompts_dir, style)
        layout[style] = (style_images(folder, style, len(prompts)), prompts)
    summaries = {}
    for style, (images, prompts) in layout.items():
        scores = hps_scores(images, prompts, model=model, preprocess=preprocess, tokenizer=tokenizer,
                            batch_size=batch_size, device=device, autocast=autocast, progress=progress,
                            desc=f"HPSv2 {style}")  # fmt: skip
        summaries[style] = style_summary(scores)
    means = [summaries[style]["mean"] for style in styles]
    if not all(math.isfinite(m) for m in means):
        raise ValueError(f"HPS of {str(folder)!r} is not finite: {dict(zip(styles, means))}")
    result = {
        "per_style": {style: summaries[style]["mean"] for style in styles},
        "average": float(np.mean(means)),
        "count": {style: summaries[style]["count"] for style in styles},
        "chunk_std": {style: summaries[style]["chunk_std"] for style in styles},
        "version": version, "model": model_name, "checkpoint": Path(checkpoint).name, "scale": SCALE,
        "styles": styles, "batch_size": batch_size, "images": str(folder), "prompts": str(prompts_dir),
    }  # fmt: skip
    if out_file is not None:
        atomic_write_text(out_file, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result
