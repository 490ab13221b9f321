"""The toy's data: scikit-learn's handwritten digits (1,797 images, 8x8, 16 grey levels) and
the prompts that name them.

Images become pixel-space "latents" of shape ``(1, 8, 8)`` in [-1, 1] (``value / 8 - 1``);
a fixed, stratified split gives the teacher and evaluators their training images and the
held-out images that are the FID reference. Prompts name a digit in one of several wordings
("a handwritten digit seven", "the number 7", ...); :func:`prompt_digit` reads the digit back,
so an evaluation needs nothing but its prompt file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten digit {word}",
    "the number {digit}",
    "a scanned image of the digit {word}",
    "handwritten {digit}",
)
MAX_VALUE = 16.0  # the digits' grey levels are 0..16
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def prompt(digit: int, template: int = 0) -> str:
    """The prompt for ``digit`` in wording ``template`` (an index into :data:`TEMPLATES`)."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be in 0..9; got {digit}.")
    return TEMPLATES[template % len(TEMPLATES)].format(word=WORDS[digit], digit=digit)


_WORD_OR_DIGIT = re.compile(r"\b(" + "|".join(WORDS) + r"|[0-9])\b")


def prompt_digit(text: str) -> int:
    """The digit a toy prompt names (its last digit word or numeral); one clear error otherwise."""
    found = _WORD_OR_DIGIT.findall(text.lower())
    if not found:
        raise ValueError(
            f"prompt {text!r} names no digit (expected e.g. 'the number 7' or 'a handwritten digit seven')."
        )
    last = found[-1]
    return int(last) if last.isdigit() else WORDS.index(last)


def prompt_list(count: int, *, seed: int = 0) -> list[str]:
    """``count`` prompts cycling through the ten digits, each with a seeded random wording."""
    rng = np.random.default_rng(seed)
    wordings = rng.integers(0, len(TEMPLATES), size=count)
    return [prompt(i % 10, int(w)) for i, w in enumerate(wordings)]


def all_prompts() -> list[str]:
    """Every (digit, wording) prompt: what the teacher is trained on."""
    return [prompt(d, t) for d in range(10) for t in range(len(TEMPLATES))]


def to_model_space(pixels: np.ndarray) -> torch.Tensor:
    """Grey levels 0..16, ``(N, 64)`` or ``(N, 8, 8)``, to float tensors ``(N, 1, 8, 8)`` in [-1, 1]."""
    array = np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 8, 8)
    return torch.from_numpy(array / (MAX_VALUE / 2) - 1.0)


@dataclass(frozen=True)
class DigitSplit:
    """Images in model space ``(N, 1, 8, 8)`` and their labels, for one side of the split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def load_split(part: str, *, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> DigitSplit:
    """The ``"train"`` or ``"test"`` part of scikit-learn's digits, stratified by label with ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test'; got {part!r}.")
    digits = load_digits()
    train_idx, test_idx = train_test_split(
        np.arange(len(digits.target)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    index = np.sort(train_idx if part == "train" else test_idx)
    return DigitSplit(to_model_space(digits.data[index]), torch.as_tensor(digits.target[index], dtype=torch.long))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Model-space images ``(N, 1, H, W)`` in [-1, 1] to 8-bit grey ``(N, H, W)`` (as the pipelines save them)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()


def write_reference_images(folder, split: DigitSplit) -> list:
    """The split's images as 8-bit grey PNGs ``<i:05d>.png`` (atomic writes): the toy's FID reference."""
    from pathlib import Path

    from PIL import Image

    from ..io import atomic_open

    folder = Path(folder)
    paths = []
    for i, array in enumerate(to_uint8(split.images)):
        path = folder / f"{i:05d}.png"
        with atomic_open(path, "wb") as handle:
            Image.fromarray(array).save(handle, format="PNG")
        paths.append(path)
    return paths


def labels_of(prompts: Sequence[str]) -> torch.Tensor:
    """The digit each prompt names, as a label tensor."""
    return torch.tensor([prompt_digit(p) for p in prompts], dtype=torch.long)
