"""Subject fidelity of DreamBooth (Ruiz et al., 2023) images: DINO, CLIP-I and CLIP-T.

* DINO: the mean, over every (generated, real) pair of images, of the cosine between their ViT-S/16 DINO
  features (``facebook/dino-vits16``): the CLS token of the last hidden state (after the final layer norm,
  no pooler), as DINO's own backbone outputs it.
* CLIP-I: the same mean pairwise cosine with CLIP's (projected) image embeddings.
* CLIP-T: the mean over images of the cosine between image ``i``'s CLIP embedding and prompt ``i``'s,
  computed by :func:`dkd.metrics.clip.image_text_cosines` (the COCO CLIP score's code) with no prefix and
  no 256-pixel pre-crop. The caller passes the text to score (DreamBooth's evaluations usually score the
  prompt without the rare identifier).

The models are transformers' ``ViTModel`` and ``CLIPModel``; each image goes through the checkpoint's own
image processor (as shipped with it: resize, crop if the processor crops, rescale, normalise with its
mean and std). The DKD paper reports none of these numbers; the CLIP checkpoint is our choice
(:data:`CLIP_MODEL`: the DreamBooth paper's text as we read it does not pin one). Everything but
:func:`load_dino` / :func:`load_subject_clip` is pure apart from running the models given as arguments; the
batched image loop is :func:`dkd.metrics.clip.batched_image_features`, shared with the COCO CLIP score.
:func:`save_tiny_subject_models` writes tiny random stand-ins of both (tests, the tiny configuration).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .clip import ImageLike, batched_image_features, image_text_cosines

# Hub models; revision: the commit to pin, None for the main branch (none recorded here: pin one once it
# has been read off the hub, never a guessed hash).
DINO_MODEL, DINO_REVISION = "facebook/dino-vits16", None
CLIP_MODEL, CLIP_REVISION = "openai/clip-vit-base-patch32", None
Images = Sequence[ImageLike]  # PIL images or image files


def _offline() -> bool:
    from ..data.download import is_offline

    return is_offline()


def _device(device):
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_dino(repo: str = DINO_MODEL, revision: str | None = DINO_REVISION, *, device=None):
    """``(model, processor)``: the DINO ``ViTModel`` (no pooler) in eval mode and its image processor, from
    the hub or a local folder (``local_files_only`` when ``HF_HUB_OFFLINE`` is set: the cache only)."""
    from transformers import AutoImageProcessor, ViTModel

    local = _offline()
    model = ViTModel.from_pretrained(repo, revision=revision, add_pooling_layer=False, local_files_only=local)
    processor = AutoImageProcessor.from_pretrained(repo, revision=revision, local_files_only=local)
    return model.to(_device(device)).eval(), processor


def load_subject_clip(repo: str = CLIP_MODEL, revision: str | None = CLIP_REVISION, *, device=None):
    """``(model, processor)``: a transformers ``CLIPModel`` in eval mode and its ``CLIPProcessor`` (image
    processor and tokenizer), from the hub or a local folder (``local_files_only`` when offline)."""
    from transformers import CLIPModel, CLIPProcessor

    local = _offline()
    model = CLIPModel.from_pretrained(repo, revision=revision, local_files_only=local)
    processor = CLIPProcessor.from_pretrained(repo, revision=revision, local_files_only=local)
    return model.to(_device(device)).eval(), processor


def mean_pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over all pairs ``(i, j)`` of ``cos(a[i], b[j])`` (rows are feature vectors; float64)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"need two non-empty (N, D) feature sets of one D; got {tuple(a.shape)}, {tuple(b.shape)}.")
    a, b = F.normalize(a.double(), dim=-1), F.normalize(b.double(), dim=-1)
    return float((a @ b.T).mean())


def _check(images: Images, batch_size: int, what: str) -> None:
    if isinstance(images, str) or len(images) == 0:
        raise ValueError(f"{what}: need a non-empty sequence of images (PIL images or files); got {images!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")


def _features(images, encode, processor, model: nn.Module, batch_size: int, device) -> torch.Tensor:
    """``encode(pixel_values)`` of the images through ``processor``, in batches, as float32 on the CPU
    (:func:`dkd.metrics.clip.batched_image_features`: no grad, eval mode)."""

    def pixels(rgb):
        return processor(images=rgb, return_tensors="pt")["pixel_values"]

    return batched_image_features(images, encode, pixels, model=model, batch_size=batch_size, device=device)


def dino_features(images: Images, *, model: nn.Module, processor, batch_size: int = 32, device=None) -> torch.Tensor:
    """The DINO feature of each image: the CLS token of ``model``'s last hidden state, ``(N, hidden)``."""
    _check(images, batch_size, "dino_features")
    return _features(
        images, lambda x: model(pixel_values=x).last_hidden_state[:, 0], processor, model, batch_size, device
    )


def clip_image_features(
    images: Images, *, model: nn.Module, processor, batch_size: int = 32, device=None
) -> torch.Tensor:
    """CLIP's projected image embedding of each image (``get_image_features``), ``(N, projection_dim)``."""
    _check(images, batch_size, "clip_image_features")
    return _features(
        images, lambda x: model.get_image_features(pixel_values=x).pooler_output, processor, model, batch_size, device
    )


def dino_similarity(
    generated: Images, real: Images, *, model: nn.Module, processor, batch_size=32, device=None
) -> float:
    """DINO: mean over all (generated, real) pairs of the cosine of their DINO features."""
    kwargs = {"model": model, "processor": processor, "batch_size": batch_size, "device": device}
    return mean_pairwise_cosine(dino_features(generated, **kwargs), dino_features(real, **kwargs))


def clip_image_similarity(
    generated: Images, real: Images, *, model: nn.Module, processor, batch_size=32, device=None
) -> float:
    """CLIP-I: mean over all (generated, real) pairs of the cosine of their CLIP image embeddings."""
    kwargs = {"model": model, "processor": processor, "batch_size": batch_size, "device": device}
    return mean_pairwise_cosine(clip_image_features(generated, **kwargs), clip_image_features(real, **kwargs))


class _OpenClipView(nn.Module):
    """A transformers ``CLIPModel`` seen through open_clip's ``encode_image`` / ``encode_text`` (what
    :func:`dkd.metrics.clip.image_text_cosines` calls): the projected embeddings, before normalisation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(input_ids=input_ids).pooler_output


def clip_text_cosines(
    images: Images, prompts: Sequence[str], *, model: nn.Module, processor, batch_size=32, device=None
):
    """Per-image cosine (float64 array) between image ``i``'s and prompt ``i``'s CLIP embeddings.

    Prompts are padded to the batch's longest (and truncated to the tokenizer's maximum): CLIP's text tower
    is causal and reads its embedding at the end-of-text token, so padding after it changes nothing.
    """
    _check(images, batch_size, "CLIP-T")
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("CLIP-T needs a CLIPProcessor (image processor and tokenizer) as processor.")

    def preprocess(image):
        return processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def tokenize(texts):
        return tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")["input_ids"]

    view = _OpenClipView(model)
    return image_text_cosines(images, list(prompts), model=view, preprocess=preprocess, tokenizer=tokenize,
                              prefix="", batch_size=batch_size, device=device, crop=None)  # fmt: skip


def clip_text_similarity(
    images: Images, prompts: Sequence[str], *, model: nn.Module, processor, batch_size=32, device=None
) -> float:
    """CLIP-T: the mean over images of :func:`clip_text_cosines`."""
    cosines = clip_text_cosines(images, prompts, model=model, processor=processor, batch_size=batch_size, device=device)
    return float(cosines.mean())


def save_tiny_subject_models(folder, *, seed: int = 0) -> dict[str, str]:
    """Tiny random stand-ins of the two models (tests, the tiny configuration: no download), saved as
    transformers folders that :func:`load_dino` / :func:`load_subject_clip` read: ``<folder>/dino`` (a ViT,
    32-pixel images, 16-pixel patches) and ``<folder>/clip`` (a CLIP with the real CLIP tokenizer).
    Returns ``{"dino": path, "clip": path}``."""
    import tempfile

    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    from ..backbones.tiny import CLIP_VOCAB_SIZE, write_clip_tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    vit = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=16)  # fmt: skip
    ViTModel(vit, add_pooling_layer=False).save_pretrained(folder / "dino")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder / "dino")
    config = CLIPConfig(
        text_config={"vocab_size": CLIP_VOCAB_SIZE, "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        projection_dim=8,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(folder / "clip")
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = write_clip_tokenizer(scratch)
        images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder / "clip")
    return {"dino": str(folder / "dino"), "clip": str(folder / "clip")}
