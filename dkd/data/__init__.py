"""Training data: prompt files and their deterministic, resumable batch order."""

from .prompts import (
    SUFFIXES,
    PromptFileError,
    PromptSet,
    batches_per_epoch,
    epoch_permutation,
    prompt_batches,
    read_prompts,
    write_prompts,
)

__all__ = [
    "SUFFIXES",
    "PromptFileError",
    "PromptSet",
    "batches_per_epoch",
    "epoch_permutation",
    "prompt_batches",
    "read_prompts",
    "write_prompts",
]
