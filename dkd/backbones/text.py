"""Prompt embeddings: CLIP (SD, 77 tokens) and T5 (PixArt-alpha, 120 tokens with a mask)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PromptEmbeds:
    """Text-encoder states of a batch of prompts, and the mask the DiT needs (None for SD)."""

    hidden_states: torch.Tensor  # (batch, tokens, dim)
    attention_mask: torch.Tensor | None = None  # (batch, tokens), 1 for real tokens

    def __len__(self) -> int:
        return self.hidden_states.shape[0]

    def to(self, device=None, dtype=None) -> PromptEmbeds:
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        return PromptEmbeds(self.hidden_states.to(device=device, dtype=dtype), mask)

    @staticmethod
    def cat(parts: list[PromptEmbeds]) -> PromptEmbeds:
        """Concatenate batches (e.g. cond and uncond, for one CFG forward pass)."""
        masks = [p.attention_mask for p in parts]
        if any(m is None for m in masks) and not all(m is None for m in masks):
            raise ValueError("cannot concatenate embeddings with and without attention masks.")
        mask = None if masks[0] is None else torch.cat(masks)
        return PromptEmbeds(torch.cat([p.hidden_states for p in parts]), mask)

    def repeat(self, batch: int) -> PromptEmbeds:
        """One prompt's embedding repeated ``batch`` times (for the empty-prompt uncond)."""
        if len(self) != 1:
            raise ValueError(f"repeat needs a single prompt's embedding; got {len(self)}.")
        mask = None if self.attention_mask is None else self.attention_mask.expand(batch, -1)
        return PromptEmbeds(self.hidden_states.expand(batch, -1, -1), mask)

    def where(self, keep: torch.Tensor, other: PromptEmbeds) -> PromptEmbeds:
        """Per sample, this batch's embedding where ``keep`` (bool, one per sample) is true, else ``other``'s."""
        if len(other) != len(self) or keep.shape != (len(self),):
            raise ValueError(
                f"where needs {len(self)} samples in other and keep; got {len(other)}, {tuple(keep.shape)}."
            )
        if (self.attention_mask is None) != (other.attention_mask is None):
            raise ValueError("cannot mix embeddings with and without attention masks.")
        states = torch.where(keep[:, None, None], self.hidden_states, other.hidden_states.to(self.hidden_states.dtype))
        mask = (
            None
            if self.attention_mask is None
            else torch.where(keep[:, None], self.attention_mask, other.attention_mask)
        )
        return PromptEmbeds(states, mask)


@torch.no_grad()
def encode_prompts(
    prompts: list[str], *, tokenizer, text_encoder: nn.Module, max_length: int, family: str
) -> PromptEmbeds:
    """Encode prompts the way the diffusers pipelines of each family do.

    SD: CLIP's last hidden state over 77 padded tokens, no mask. PixArt-alpha: T5 encoder
    states over ``max_length`` (120) padded tokens, with the attention mask passed to both the
    encoder and, later, the DiT's cross-attention.
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of strings.")
    tokens = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    device = next(text_encoder.parameters()).device
    ids = tokens.input_ids.to(device)
    if family == "sd":
        return PromptEmbeds(text_encoder(ids)[0])
    mask = tokens.attention_mask.to(device)
    return PromptEmbeds(text_encoder(ids, attention_mask=mask)[0], mask)
