"""The tiny models of the LoRaD test matrix (PEFT's custom-model test layout)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dkd.adapters import AdapterSpec
from dkd.backbones.tiny import TINY_PIXART_CONFIG, TINY_UNET_CONFIG, tiny_pixart, tiny_unet


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin0 = nn.Linear(10, 12)
        self.lin1 = nn.Linear(12, 6, bias=False)

    def forward(self, x):
        return self.lin1(torch.tanh(self.lin0(x)))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(4, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(6, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, padding_mode="reflect")
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        h = self.conv2(torch.tanh(self.conv1(torch.tanh(self.conv0(x)))))
        return self.head(h.mean((2, 3)))


@dataclass(frozen=True)
class Case:
    """A model factory, the modules LoRaD adapts, and how to call the model."""

    name: str
    build: Callable[[], nn.Module]
    targets: list[str]
    inputs: Callable[[torch.Generator, torch.dtype], dict]

    def __repr__(self) -> str:
        return self.name


def _randn(g, dtype, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _unet_inputs(g, dtype):
    return {
        "sample": _randn(g, dtype, 2, 4, 8, 8),
        "timestep": torch.tensor([10, 700]),
        "encoder_hidden_states": _randn(g, dtype, 2, 5, TINY_UNET_CONFIG["cross_attention_dim"]),
    }


def _pixart_inputs(g, dtype):
    return {
        "hidden_states": _randn(g, dtype, 2, 4, 8, 8),
        "timestep": torch.tensor([10, 700]),
        "encoder_hidden_states": _randn(g, dtype, 2, 5, TINY_PIXART_CONFIG["caption_channels"]),
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
    }


CASES = [
    Case("mlp", MLP, ["lin0", "lin1"], lambda g, dt: {"x": _randn(g, dt, 3, 10)}),
    Case("conv", ConvNet, ["conv0", "conv1", "conv2"], lambda g, dt: {"x": _randn(g, dt, 2, 4, 7, 7)}),
    Case("unet", tiny_unet, AdapterSpec("sd15", layers="linear+conv").target_modules(), _unet_inputs),
    Case("pixart", tiny_pixart, AdapterSpec("pixart256").target_modules(), _pixart_inputs),
]


def cat_inputs(parts: list[dict]) -> dict:
    """The inputs of several calls as one batch: tensors concatenated along dim 0, recursively."""
    first = parts[0]
    return {
        k: torch.cat([p[k] for p in parts])
        if isinstance(v, torch.Tensor)
        else cat_inputs([p[k] for p in parts])
        if isinstance(v, dict)
        else v
        for k, v in first.items()
    }


def sample(inputs: dict, i: int) -> dict:
    """Sample ``i`` of a batch of inputs, as a batch of one."""
    return {
        k: v[i : i + 1] if isinstance(v, torch.Tensor) else sample(v, i) if isinstance(v, dict) else v
        for k, v in inputs.items()
    }


def batch_size(inputs: dict) -> int:
    return len(next(v for v in inputs.values() if isinstance(v, torch.Tensor)))


def output(model: nn.Module, inputs: dict) -> torch.Tensor:
    out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.sample
