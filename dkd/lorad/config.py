"""``LoRaDConfig``: the configuration of a LoRaD adapter (a PEFT config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from .registry import LORAD_PEFT_TYPE

INIT_CHOICES = ("zero_xavier", "xavier_xavier")


@dataclass
class LoRaDConfig(PeftConfig):
    """Configuration of a Low-rank Rotation of weight Direction (LoRaD) adapter.

    Each adapted layer rotates every output row of its weight in pairs of input coordinates
    by angles ``theta = (A B)^T``; ``A`` is ``(in/2, r)``, ``B`` is ``(r, out)``, so a layer
    has ``r * (in/2 + out)`` trainable parameters (Conv2d: ``in`` is ``in * kh * kw``).

    Args:
        r: rank of the angle matrix.
        target_modules: module names (exact or suffix match) or one regex, as in PEFT.
        exclude_modules: module names or one regex that are never adapted (for instance a
            layer whose rotated dimension is odd).
        init_weights: ``"zero_xavier"`` (A = 0, B Xavier: the adapted model starts equal to
            the base model; the paper's default) or ``"xavier_xavier"`` (both Xavier; Table 8).
        memory_efficient_backward: recompute the rotated weight in backward instead of
            keeping it (and cos/sin) alive between forward and backward.
        bias: ``"none"``, ``"all"`` or ``"lorad_only"``: which biases are trained.
        rank_pattern: per-module ranks, ``{regex_or_name: r}``.
        modules_to_save: modules trained in full and saved with the adapter.
    """

    r: int = field(default=32, metadata={"help": "Rank of the rotation-angle matrix Theta = (A B)^T."})
    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names or a regex of the modules to adapt."}
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names or a regex of the modules never to adapt."}
    )
    init_weights: Literal["zero_xavier", "xavier_xavier"] = field(
        default="zero_xavier", metadata={"help": "'zero_xavier' (A=0, B Xavier) or 'xavier_xavier'."}
    )
    memory_efficient_backward: bool = field(
        default=True, metadata={"help": "Recompute the rotated weight in backward (saves memory)."}
    )
    bias: Literal["none", "all", "lorad_only"] = field(default="none", metadata={"help": "Biases to train."})
    rank_pattern: dict | None = field(default_factory=dict, metadata={"help": "Per-module ranks."})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full and saved with the adapter."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = LORAD_PEFT_TYPE
        self.target_modules = set(self.target_modules) if isinstance(self.target_modules, list) else self.target_modules
        self.exclude_modules = (
            set(self.exclude_modules) if isinstance(self.exclude_modules, list) else self.exclude_modules
        )
        _check_rank("r", self.r)
        for key, rank in (self.rank_pattern or {}).items():
            _check_rank(f"rank_pattern[{key!r}]", rank)
        if self.init_weights not in INIT_CHOICES:
            raise ValueError(f"init_weights must be one of {INIT_CHOICES}; got {self.init_weights!r}.")
        if self.bias not in ("none", "all", "lorad_only"):
            raise ValueError(f"bias must be 'none', 'all' or 'lorad_only'; got {self.bias!r}.")
        if not isinstance(self.memory_efficient_backward, bool):
            raise ValueError(f"memory_efficient_backward must be a bool; got {self.memory_efficient_backward!r}.")


def _check_rank(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
