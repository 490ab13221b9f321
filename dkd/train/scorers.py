"""Image-text scorers of the auxiliary loss on the generator's samples (SwiftBrush v2's clamped CLIP loss).

A scorer maps the generator's x0 (with its graph) and the prompts to one score per sample, differentiable
in x0; ``dkd.train.losses.clamped_score_loss`` turns it into the loss ``max(0, margin - score)``.

``clip`` (SwiftBrush v2, PG-SB)
    x0 decoded by a small decoder (TAESD, ``madebyollin/taesd``: the same latents the U-Net makes, in
    [-1, 1]), resized to the CLIP model's input (bicubic, as its preprocessing) and normalised with its
    mean and std, then the cosine of open_clip's image and text embeddings (ViT-B/32 in SwiftBrush v2).
``toy``
    the toy's counterpart: the digit classifier's probability of the digit the prompt names, on the
    pixel-space samples (``dkd.toy.evaluator``).

:class:`ScorerSpec` says what to load (JSON-serialisable: a distillation job carries it); :func:`load_scorer`
loads it, frozen, in eval mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("clip", "toy")
TAESD = "madebyollin/taesd"  # SwiftBrush v2: "TinyVAE"
CLIP_MODEL, CLIP_PRETRAINED = "ViT-B-32", "laion2b_s34b_b79k"  # SwiftBrush v2: OpenCLIP ViT-B/32 (tag not given)


@dataclass(frozen=True)
class ScorerSpec:
    """``kind`` ``"clip"``: ``decoder`` (a diffusers ``AutoencoderTiny`` folder or hub id), open_clip
    ``model`` and ``pretrained`` tag (or a weights file); ``"toy"``: the digit ``classifier`` folder."""

    kind: str
    decoder: str | None = TAESD
    model: str = CLIP_MODEL
    pretrained: str | None = CLIP_PRETRAINED
    classifier: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"scorer kind must be one of {KINDS}; got {self.kind!r}.")
        if self.kind == "toy" and not self.classifier:
            raise ValueError("a toy scorer needs the digit classifier's folder (classifier=).")
        if self.kind == "clip" and not self.decoder:
            raise ValueError("a clip scorer needs a decoder (a diffusers AutoencoderTiny folder or hub id).")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ClipScorer(nn.Module):
    """Cosine of open_clip's embeddings of the decoded sample and of the prompt (module docstring)."""

    def __init__(self, decoder: nn.Module, clip: nn.Module, tokenizer):
        super().__init__()
        self.decoder, self.clip, self.tokenizer = decoder, clip, tokenizer
        config = getattr(clip.visual, "preprocess_cfg", {})
        self.size = tuple(config.get("size", clip.visual.image_size))
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.48145466, 0.4578275, 0.40821073))))
        self.register_buffer("std", torch.tensor(config.get("std", (0.26862954, 0.26130258, 0.27577711))))

    def images(self, x0: torch.Tensor) -> torch.Tensor:
        """The CLIP image tower's input: decoded, in [0, 1], resized, normalised (differentiable)."""
        decoded = self.decoder.decode(x0.to(self.decoder.dtype)).sample.float()
        pixels = ((decoded + 1) / 2).clamp(0, 1)
        pixels = F.interpolate(pixels, size=self.size, mode="bicubic", align_corners=False)
        return (pixels - self.mean[:, None, None]) / self.std[:, None, None]

    def forward(self, x0: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        image = self.clip.encode_image(self.images(x0))
        with torch.no_grad():
            text = self.clip.encode_text(self.tokenizer(list(prompts)).to(x0.device))
        return F.cosine_similarity(image.float(), text.float(), dim=-1)


class DigitScorer(nn.Module):
    """The digit classifier's probability of the digit each prompt names (the toy's CLIP score)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x0: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        from ..toy.data import prompt_digit

        labels = torch.tensor([prompt_digit(p) for p in prompts], device=x0.device)
        probs = self.classifier(x0.float()).softmax(dim=1)
        return probs[torch.arange(len(labels), device=x0.device), labels]


def load_scorer(spec: ScorerSpec | dict, device="cpu") -> nn.Module:
    """The scorer ``spec`` names, frozen and in eval mode on ``device`` (hub files from the cache when
    ``HF_HUB_OFFLINE=1``: ``snakemake downloads`` fetches them)."""
    spec = spec if isinstance(spec, ScorerSpec) else ScorerSpec(**spec)
    if spec.kind == "toy":
        from ..toy.evaluator import load_classifier

        scorer = DigitScorer(load_classifier(spec.classifier))
    else:
        import open_clip
        from diffusers import AutoencoderTiny

        decoder = AutoencoderTiny.from_pretrained(spec.decoder)
        clip = open_clip.create_model(spec.model, pretrained=spec.pretrained)
        scorer = ClipScorer(decoder, clip, open_clip.get_tokenizer(spec.model))
    return scorer.to(device).eval().requires_grad_(False)


TINY_CLIP = "ViT-S-32"  # the smallest open_clip model with a text tower (random weights in the tiny scorer)


def save_tiny_scorer(folder, *, seed: int = 0) -> dict:
    """A clip scorer with random weights (no download: tests and the tiny config): a TAESD-shaped
    ``AutoencoderTiny`` for 4-channel latents in ``folder/decoder`` and open_clip ViT-S-32 weights in
    ``folder/clip.pt``; returns its :class:`ScorerSpec` fields."""
    from pathlib import Path

    import open_clip
    from diffusers import AutoencoderTiny

    folder = Path(folder)
    torch.manual_seed(seed)
    decoder = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )
    decoder.save_pretrained(folder / "decoder")
    torch.save(open_clip.create_model(TINY_CLIP, pretrained=None).state_dict(), folder / "clip.pt")
    return ScorerSpec(
        "clip", decoder=str(folder / "decoder"), model=TINY_CLIP, pretrained=str(folder / "clip.pt")
    ).to_dict()
