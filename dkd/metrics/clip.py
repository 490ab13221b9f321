"""CLIP score of the COCO evaluation (``docs/reference.md`` section 3).

open_clip ``ViT-g-14`` with the ``laion2b_s12b_b42k`` weights; each caption is prefixed with
``"A photo depicts "``; the score of an image is the raw cosine between its L2-normalised
image embedding and the L2-normalised embedding of its prefixed caption, and the reported
CLIP score is the mean over images, on the 0.30 scale (not multiplied by 100, no clipping at 0).

Each image is first center-cropped on its long side and LANCZOS-resized to 256 pixels, as for
FID (``dkd.metrics.images.center_crop_resize``; DMD2's ``compute_clip_score`` does the same), then
goes through the model's own open_clip ``preprocess`` (resize + center crop to its input size);
``crop=None`` skips the first step. Pure apart from I/O: the model, transform and tokenizer are
arguments, :func:`load_clip` builds the real ones.

:func:`batched_image_features` is the batched, no-grad image loop of this score and of the subject
metrics (``dkd.metrics.subject``: DINO, CLIP-I).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io import atomic_write_text
from .images import SIZE, center_crop_resize, list_images, to_rgb

MODEL = "ViT-g-14"
PRETRAINED = "laion2b_s12b_b42k"
PREFIX = "A photo depicts "
ImageLike = Image.Image | str | os.PathLike


def load_clip(name: str = MODEL, pretrained: str | None = PRETRAINED, *, device=None):
    """``(model, preprocess, tokenizer)`` of open_clip ``name`` with weights ``pretrained``, in eval mode.

    ``preprocess`` is open_clip's inference transform. Downloads the weights on first use.
    """
    import open_clip

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def batched_image_features(
    images: Sequence[ImageLike],
    encode: Callable[[torch.Tensor], torch.Tensor],
    pixels: Callable[[list[Image.Image]], torch.Tensor],
    *,
    model: torch.nn.Module,
    batch_size: int = 32,
    device=None,
) -> torch.Tensor:
    """``encode(pixels(rgb))`` of the images, ``batch_size`` at a time (``rgb``: a batch's images as RGB PIL
    images; ``pixels`` turns them into the model's input), with no grad and ``model`` in eval mode; the
    pixels go to ``device`` (default: the model's) in the model's dtype. Returns float32 features on the
    CPU, one row per image."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    parameter = next(model.parameters())
    device = parameter.device if device is None else device
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            rgb = [to_rgb(image) for image in images[start : start + batch_size]]
            out.append(encode(pixels(rgb).to(device, parameter.dtype)).float().cpu())
    return torch.cat(out)


def image_text_cosines(
    images: Sequence[ImageLike],
    captions: Sequence[str],
    *,
    model: torch.nn.Module,
    preprocess: Callable,
    tokenizer: Callable,
    prefix: str = PREFIX,
    batch_size: int = 32,
    device=None,
    crop: int | None = SIZE,
) -> np.ndarray:
    """Per-image cosine between ``model.encode_image`` of image ``i`` and ``model.encode_text``
    of ``prefix + captions[i]``, both L2-normalised (float64 array, values in ``[-1, 1]``).

    Inputs go to ``device`` (default: the model's) in the model's dtype; ``model`` is put in eval mode.
    """
    if len(images) != len(captions):
        raise ValueError(
            f"clip score needs one caption per image; got {len(images)} images and {len(captions)} captions"
        )
    if len(images) == 0:
        raise ValueError("clip score of an empty image set")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    def pixels(rgb: list[Image.Image]) -> torch.Tensor:
        return torch.stack([preprocess(center_crop_resize(image, crop) if crop else image) for image in rgb])

    image_emb = batched_image_features(
        images, model.encode_image, pixels, model=model, batch_size=batch_size, device=device
    )
    device = next(model.parameters()).device if device is None else device
    text_emb = []
    with torch.no_grad():
        for start in range(0, len(captions), batch_size):
            tokens = tokenizer([prefix + caption for caption in captions[start : start + batch_size]]).to(device)
            text_emb.append(model.encode_text(tokens).float().cpu())
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(torch.cat(text_emb), dim=-1)
    return (image_emb * text_emb).sum(dim=-1).double().numpy()


def clip_score(
    images: Sequence[ImageLike],
    captions: Sequence[str],
    *,
    model: torch.nn.Module,
    preprocess: Callable,
    tokenizer: Callable,
    prefix: str = PREFIX,
    batch_size: int = 32,
    device=None,
    crop: int | None = SIZE,
    model_name: str = MODEL,
    pretrained: str | None = PRETRAINED,
    out_file: str | os.PathLike | None = None,
) -> dict:
    """Mean raw cosine over the images (:func:`image_text_cosines`).

    ``model_name`` / ``pretrained`` only label the result (pass the ones the model was built
    with). Returns ``{"clip_score", "count", "model", "pretrained", "prefix", "crop"}``; with
    ``out_file`` it is also written atomically as JSON.
    """
    cosines = image_text_cosines(images, captions, model=model, preprocess=preprocess, tokenizer=tokenizer,
                                 prefix=prefix, batch_size=batch_size, device=device, crop=crop)  # fmt: skip
    result = {"clip_score": float(cosines.mean()), "count": int(cosines.size), "model": model_name,
              "pretrained": pretrained, "prefix": prefix, "crop": crop}  # fmt: skip
    if out_file is not None:
        atomic_write_text(out_file, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def folder_pairs(folder: str | os.PathLike, captions: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Pair the images of ``folder`` with ``captions`` by index: ``<i>.<ext>`` (``dkd.sampling.shards``'s
    ``<i:05d>.png``) takes caption ``i``. Every caption must have exactly one image."""
    files = list_images(folder)
    by_index: dict[int, Path] = {}
    for path in files:
        if not re.fullmatch(r"\d+", path.stem):
            raise ValueError(f"{str(path)!r}: image names must be the caption index (e.g. 00012.png)")
        index = int(path.stem)
        if index >= len(captions) or index in by_index:
            raise ValueError(f"{str(path)!r}: index {index} is out of range for {len(captions)} captions or repeated")
        by_index[index] = path
    if len(by_index) != len(captions):
        missing = sorted(set(range(len(captions))) - set(by_index))
        raise ValueError(
            f"{str(folder)!r} has {len(by_index)} images for {len(captions)} captions; missing e.g. {missing[:5]}"
        )
    return [by_index[i] for i in range(len(captions))], list(captions)


def clip_score_folder(folder: str | os.PathLike, captions: Sequence[str], **kwargs) -> dict:
    """:func:`clip_score` of the images of ``folder`` paired with ``captions`` by :func:`folder_pairs`."""
    images, captions = folder_pairs(folder, captions)
    return clip_score(images, captions, **kwargs)
