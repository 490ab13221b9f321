"""The toy's evaluators: a digit classifier trained on the training split and checked on the
held-out split, standing in for Inception (FID, precision/recall) and for CLIP (the
probability of the prompted digit).

Its penultimate features feed the same FID and precision/recall code as the paper, through
clean-fid's custom feature extractor (:class:`DigitFeatures`): clean-fid hands it batches of
``(B, 3, 299, 299)`` images in [0, 255] (the 8x8 PNGs resized by its ``mode="clean"``
loader, an interpolating bicubic filter); it averages the channels and samples the 299-pixel
image at the centres of the 8x8 grid (bilinear, no antialias), which gives back the original
pixels up to the filter's small overshoot, then maps to model space.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..io import atomic_open, atomic_write_text
from .data import DigitSplit, labels_of, load_split

FEATURES = 64
NAME = "toy_digit_classifier"


class DigitClassifier(nn.Module):
    """A small CNN on 8x8 digits in [-1, 1]: ``features`` (64-d) then ``head`` (ReLU, 10 logits)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 4, FEATURES),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURES, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64 pre-activations before the last ReLU (no dead, constant dimensions: a full-rank
        covariance for FID)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 1  # random translation (pixels) as augmentation
    seed: int = 0

    def __post_init__(self):
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0 or self.max_shift < 0:
            raise ValueError(f"epochs, batch_size, lr must be > 0 and max_shift >= 0; got {asdict(self)}.")


def _shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image translated by up to ``max_shift`` pixels, background (-1) filled in."""
    if max_shift == 0:
        return x
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, len(x)), generator=generator)
    size = x.shape[-1]
    return torch.stack([padded[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(len(x))])


def train_classifier(config: ClassifierConfig, train: DigitSplit | None = None) -> DigitClassifier:
    """Train the classifier on the training split (AdamW, cosine schedule, random shifts)."""
    train = train if train is not None else load_split("train")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), config.batch_size):
            index = order[start : start + config.batch_size]
            x = _shift(train.images[index], config.max_shift, generator)
            loss = F.cross_entropy(model(x), train.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: DigitClassifier, split: DigitSplit) -> float:
    return float((model(split.images).argmax(1) == split.labels).float().mean())


def save_classifier(model: DigitClassifier, folder: str | Path, **info) -> Path:
    """``model.safetensors`` and ``classifier.json`` (name, feature size, ``info`` such as accuracy)."""
    from safetensors.torch import save

    folder = Path(folder)
    with atomic_open(folder / "model.safetensors", "wb") as handle:
        handle.write(save(model.state_dict()))
    atomic_write_text(
        folder / "classifier.json", json.dumps({"name": NAME, "features": FEATURES, **info}, indent=2) + "\n"
    )
    return folder


def save_classifier_weights(model: DigitClassifier, path: str | Path, config: ClassifierConfig) -> Path:
    """The classifier's weights as one safetensors file (atomically), its training settings in the metadata:
    the file that ships as ``config/toy/evaluator.safetensors``."""
    from safetensors.torch import save

    with atomic_open(path, "wb") as handle:
        handle.write(save(model.state_dict(), metadata={"name": NAME, "config": json.dumps(asdict(config))}))
    return Path(path)


def load_classifier_weights(path: str | Path) -> DigitClassifier:
    """A classifier from a weights file (:func:`save_classifier_weights`, or a folder's ``model.safetensors``)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no toy classifier weights at {path}; retrain them with the workflow rule toy_evaluator_weights."
        )
    model = DigitClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


def load_classifier(folder: str | Path) -> DigitClassifier:
    """The evaluator folder's classifier (``model.safetensors``, written by the rule toy_evaluator)."""
    return load_classifier_weights(Path(folder) / "model.safetensors")


class DigitFeatures(nn.Module):
    """clean-fid's custom feature extractor: ``(B, 3, 299, 299)`` in [0, 255] -> ``(B, 64)``."""

    name = NAME

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier

    @staticmethod
    def to_model_space(batch: torch.Tensor) -> torch.Tensor:
        grey = batch.float().mean(dim=1, keepdim=True)
        centres = F.interpolate(grey, size=(8, 8), mode="bilinear", align_corners=False, antialias=False)
        return centres / 127.5 - 1.0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(self.to_model_space(batch))


def read_images(paths: Sequence[str | Path]) -> torch.Tensor:
    """8-bit image files (grey or RGB, 8x8) to model space ``(N, 1, 8, 8)``."""
    from PIL import Image

    arrays = []
    for path in paths:
        with Image.open(path) as image:
            if image.size != (8, 8):
                raise ValueError(f"{path}: a toy image is 8x8, not {image.size[0]}x{image.size[1]}.")
            arrays.append(np.asarray(image.convert("L"), dtype=np.float32))
    return torch.from_numpy(np.stack(arrays)[:, None] / 127.5 - 1.0)


@torch.no_grad()
def prompt_agreement(model: DigitClassifier, images: torch.Tensor, prompts: Sequence[str]) -> dict:
    """The toy's CLIP score: mean probability of the digit each prompt names, and the accuracy."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts.")
    labels = labels_of(prompts)
    probs = model(images.float()).softmax(dim=1)
    return {
        "digit_prob": float(probs[torch.arange(len(labels)), labels].mean()),
        "digit_accuracy": float((probs.argmax(1) == labels).float().mean()),
        "count": len(labels),
    }
