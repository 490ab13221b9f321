"""LoRaD layers: a frozen Linear or Conv2d whose weight rows are rotated by ``(A B)^T``."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer, _get_in_out_features, check_adapters_to_merge
from torch import nn

from .function import ConvArgs, rotated_forward
from .rotation import angles, rotate_pairs


class OddDimensionError(ValueError):
    """The rotated dimension of a layer (``in`` or ``in * kh * kw``) is odd."""


BASE = "__base__"  # the name PEFT's mixed batches give to samples that use no adapter


def rotated_features(module: nn.Module) -> int:
    """The length of the rotated rows: ``in`` for Linear, ``in/groups * kh * kw`` for Conv2d."""
    return module.weight[0].numel()


def broken_adapter_error(adapter_name: str) -> ValueError:
    """The error PEFT's tuners raise when a safe merge would write non-finite weights."""
    return ValueError(f"NaNs detected in the merged weights. The adapter {adapter_name} seems to be broken")


class LoRaDLayer(BaseTunerLayer):
    """State and merge logic shared by the LoRaD Linear and Conv2d layers.

    Several adapters on one layer rotate the same coordinate pairs, so they commute and
    compose by adding angles: the active adapters' factors are concatenated along the rank
    (``sum_k (A_k B_k)^T = ([A_1 ... A_n] [B_1; ...; B_n])^T``) and applied as one rotation.

    ``in_features`` and ``out_features`` mean what they mean on PEFT's LoRA layers (``in`` /
    ``out`` of a Linear, ``in_channels`` / ``out_channels`` of a Conv2d); ``rotated_features``
    is the length of the rotated weight rows.
    """

    adapter_layer_names = ("lorad_A", "lorad_B")
    other_param_names = ("r",)

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.r: dict[str, int] = {}
        self.lorad_A = nn.ParameterDict({})
        self.lorad_B = nn.ParameterDict({})
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self.memory_efficient = True
        self.kwargs = kwargs
        base = self.get_base_layer()
        self.in_features, self.out_features = _get_in_out_features(base)
        self.rotated_features = rotated_features(base)
        if self.rotated_features % 2:
            raise OddDimensionError(
                f"LoRaD rotates pairs of input coordinates, but this {type(base).__name__} has an odd "
                f"rotated dimension ({self.rotated_features})."
            )

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        init_weights: str = "zero_xavier",
        memory_efficient: bool = True,
        inference_mode: bool = False,
        **kwargs: Any,
    ) -> None:
        if r <= 0:
            raise ValueError(f"r must be a positive integer; got {r}.")
        self.r[adapter_name] = r
        self.lorad_A[adapter_name] = nn.Parameter(torch.empty(self.rotated_features // 2, r))
        self.lorad_B[adapter_name] = nn.Parameter(torch.empty(r, self.out_features))
        self.memory_efficient = memory_efficient
        self.reset_lorad_parameters(adapter_name, init_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def reset_lorad_parameters(self, adapter_name: str, init_weights: str) -> None:
        """``zero_xavier``: A = 0, B Xavier (rotation 0 at start); ``xavier_xavier``: both Xavier."""
        if adapter_name not in self.lorad_A:
            return
        nn.init.xavier_uniform_(self.lorad_B[adapter_name])
        if init_weights == "zero_xavier":
            nn.init.zeros_(self.lorad_A[adapter_name])
        elif init_weights == "xavier_xavier":
            nn.init.xavier_uniform_(self.lorad_A[adapter_name])
        else:
            raise ValueError(f"Unknown init_weights {init_weights!r}.")

    def _factors(self, adapter_names: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``A`` and ``B`` of the given adapters concatenated along the rank (None if none)."""
        names = [name for name in adapter_names if name in self.lorad_A]
        if not names:
            return None
        if len(names) == 1:
            return self.lorad_A[names[0]], self.lorad_B[names[0]]
        return (
            torch.cat([self.lorad_A[n] for n in names], dim=1),
            torch.cat([self.lorad_B[n] for n in names], dim=0),
        )

    def get_angles(self, adapter_name: str) -> torch.Tensor:
        """The angle matrix ``theta`` of one adapter, shape ``(out, rotated_features/2)``."""
        return angles(self.lorad_A[adapter_name], self.lorad_B[adapter_name])

    def _rotate_base_weight(self, adapter_name: str, sign: float, safe: bool = False) -> None:
        weight = self.get_base_layer().weight
        with torch.no_grad():
            rotated = rotate_pairs(weight.data, sign * self.get_angles(adapter_name).detach())
            if safe and not torch.isfinite(rotated).all():
                raise broken_adapter_error(adapter_name)
            weight.data.copy_(rotated.to(weight.dtype))

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """``W <- R_theta W`` for each adapter (exact up to the weight dtype's rounding).

        With ``safe_merge`` a rotation that yields a non-finite weight raises PEFT's error and
        leaves this layer's weight as it was.
        """
        for name in check_adapters_to_merge(self, adapter_names):
            if name in self.lorad_A:
                self._rotate_base_weight(name, 1.0, safe=safe_merge)
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Rotate back by ``-theta`` (no matrix inverse), most recently merged first."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.lorad_A:
                self._rotate_base_weight(name, -1.0)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``R W - W`` for one adapter (in the weight's dtype), as PEFT's other tuners expose it."""
        weight = self.get_base_layer().weight
        rotated = rotate_pairs(weight, self.get_angles(adapter_name))
        return (rotated - weight.to(rotated.dtype)).to(weight.dtype)

    def _conv_args(self) -> ConvArgs | None:
        return None

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _LoRaDModule(nn.Module, LoRaDLayer):
    """An ``nn.Module`` wrapping a base layer with LoRaD adapters (PEFT's layer layout)."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, r: int, **kwargs: Any) -> None:
        super().__init__()
        LoRaDLayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, **kwargs)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        adapter_names = kwargs.pop("adapter_names", None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        factors = None if self.merged else self._factors(list(self.active_adapters))
        return self._forward_with(x, factors, *args, **kwargs)

    def _forward_with(
        self, x: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor] | None, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The base layer rotated by ``factors`` (``(A, B)``), or the base layer alone if None."""
        if factors is None:
            return self.base_layer(x, *args, **kwargs)
        base = self.get_base_layer()
        return rotated_forward(
            self._prepare_input(x),
            base.weight,
            base.bias,
            *factors,
            conv=self._conv_args(),
            memory_efficient=self.memory_efficient,
        )

    def _check_forward_args(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Refuse ``adapter_names`` of the wrong length, or while adapters are merged (as LoRA)."""
        adapter_names = kwargs.get("adapter_names")
        if adapter_names is None:
            return
        if len(x) != len(adapter_names):
            raise ValueError(
                "Length of `adapter_names` should be the same as the number of inputs, but got "
                f"{len(adapter_names)} and {len(x)} respectively."
            )
        if self.merged:
            raise ValueError(
                "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first."
            )

    def _mixed_batch_forward(
        self, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any
    ) -> torch.Tensor:
        """Sample ``i`` rotated by adapter ``adapter_names[i]`` alone (PEFT's mixed-adapter batch).

        Samples are grouped by adapter name and each group goes through the usual rotated
        forward with that adapter's factors; ``"__base__"`` samples, and those whose adapter
        this layer does not have, get the frozen base layer's output.
        """
        groups: dict[str, list[int]] = {}
        for index, name in enumerate(adapter_names):
            groups.setdefault(name, []).append(index)
        if len(groups) <= 1:  # one group: the whole batch, in order
            name = next(iter(groups), BASE)
            return self._forward_with(x, None if name == BASE else self._factors([name]), *args, **kwargs)
        result = None
        for name, indices in groups.items():
            index = torch.tensor(indices, device=x.device)
            out = self._forward_with(x[index], None if name == BASE else self._factors([name]), *args, **kwargs)
            if result is None:
                result = out.new_empty((len(adapter_names), *out.shape[1:]))
            result[index] = out.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "lorad." + super().__repr__()


class Linear(_LoRaDModule):
    """LoRaD on an ``nn.Linear``."""


class Conv2d(_LoRaDModule):
    """LoRaD on an ``nn.Conv2d``: the weight is rotated as ``(out, in/groups * kh * kw)``."""

    def _conv_args(self) -> ConvArgs:
        conv = self.get_base_layer()
        padding = (0, 0) if conv.padding_mode != "zeros" else conv.padding
        if isinstance(padding, str):
            raise ValueError(f"LoRaD Conv2d needs numeric padding; got padding={padding!r}.")
        return ConvArgs(conv.stride, tuple(padding), conv.dilation, conv.groups)

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.get_base_layer()
        if conv.padding_mode == "zeros":
            return x
        return F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
