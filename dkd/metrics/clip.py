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
    parameter = next(model.parameters())
    device = parameter.device if device is None else device
    model.eval()
    cosines = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            rgb = [to_rgb(image) for image in batch]
            rgb = [center_crop_resize(image, crop) for image in rgb] if crop else rgb
            pixels = torch.stack([preprocess(image) for image in rgb]).to(device, parameter.dtype)
            tokens = tokenizer([prefix + caption for caption in captions[start : start + batch_size]]).to(device)
            image_emb = F.normalize(model.encode_image(pixels).float(), dim=-1)
            text_emb = F.normalize(model.encode_text(tokens).float(), dim=-1)
            cosines.append((image_emb * text_emb).sum(dim=-1).double().cpu())
    return torch.cat(cosines).numpy()


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
