"""``LoRaDModel``: the PEFT tuner that injects LoRaD layers into a model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from peft.tuners.lora.model import _adapter_names_pre_forward_hook
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, _ExcludedModule, check_target_module_exists
from peft.utils.other import AuxiliaryTrainingWrapper, get_pattern_key
from torch import nn

from .config import LoRaDConfig
from .layer import BASE, Conv2d, Linear, LoRaDLayer, OddDimensionError, rotated_features

SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d)


class LoRaDModel(BaseTuner):
    """Creates a LoRaD model from a base model (see ``LoRaDConfig``).

    Used through PEFT (``get_peft_model``, ``inject_adapter_in_model``, diffusers'
    ``add_adapter``) once ``dkd.lorad`` is imported, which registers the method.

    ``peft_model(x, adapter_names=[...])`` serves a mixed-adapter batch as with LoRA: sample
    ``i`` goes through adapter ``adapter_names[i]`` (``"__base__"``: the base model).
    """

    prefix: str = "lorad_"
    tuner_layer_cls = LoRaDLayer
    target_module_mapping: dict = {}

    def _create_and_replace(
        self, lorad_config: LoRaDConfig, adapter_name, target, target_name, parent, current_key, **kwargs
    ):
        if current_key is None:
            raise ValueError("current_key must not be None.")
        rank_key = get_pattern_key((lorad_config.rank_pattern or {}).keys(), current_key)
        layer_kwargs = {
            "r": (lorad_config.rank_pattern or {}).get(rank_key, lorad_config.r),
            "init_weights": lorad_config.init_weights,
            "memory_efficient": lorad_config.memory_efficient_backward,
            "inference_mode": lorad_config.inference_mode,
        }
        if isinstance(target, LoRaDLayer):
            target.update_layer(adapter_name, **layer_kwargs)
            return
        try:
            new_module = self._create_new_module(target, adapter_name, **layer_kwargs)
        except OddDimensionError as err:
            raise OddDimensionError(f"Cannot adapt module '{current_key}': {err} Add it to exclude_modules.") from None
        if adapter_name != self.active_adapter:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """Pass ``adapter_names`` to every LoRaD layer (and modules_to_save) during one forward.

        ``PeftModel.forward`` enters this context; the checks are LoRA's: no mixed batch in
        training mode, and every name but ``"__base__"`` must be an adapter of some layer.
        """
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise ValueError("Cannot pass `adapter_names` when the model is in training mode.")
        known = set()
        for module in self.modules():
            if isinstance(module, LoRaDLayer):
                known |= module.lorad_A.keys()
        unknown = {name for name in adapter_names if name != BASE} - known
        if unknown:
            raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(sorted(unknown))}")
        hook = partial(_adapter_names_pre_forward_hook, adapter_names=adapter_names)
        handles = [
            module.register_forward_pre_hook(hook, with_kwargs=True)
            for module in self.modules()
            if isinstance(module, (LoRaDLayer, AuxiliaryTrainingWrapper))
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def _create_new_module(target: nn.Module, adapter_name: str, **kwargs) -> LoRaDLayer:
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if isinstance(base, nn.Conv2d):
            return Conv2d(target, adapter_name, **kwargs)
        if isinstance(base, nn.Linear):
            return Linear(target, adapter_name, **kwargs)
        raise TypeError(f"LoRaD supports torch.nn.Linear and torch.nn.Conv2d; got {type(base).__name__}.")


@dataclass(frozen=True)
class TargetPlan:
    """Which modules a config adapts and which it skips (matched, but excluded)."""

    adapted: tuple[str, ...]
    skipped: tuple[str, ...]
    odd: tuple[str, ...]

    def trainable_parameters(self, model: nn.Module, r: int) -> int:
        """``sum r * (in/2 + out)`` over the adapted modules (without touching the model)."""
        modules = dict(model.named_modules())
        return sum(r * (rotated_features(modules[n]) // 2 + modules[n].weight.shape[0]) for n in self.adapted)


def plan_targets(model: nn.Module, config: LoRaDConfig) -> TargetPlan:
    """Resolve ``config``'s targets on ``model`` the way PEFT will, before injecting.

    ``odd`` lists adapted modules whose rotated dimension is odd: injection would fail on
    them, so the caller can exclude them (or report them) up front.
    """
    adapted, skipped, odd = [], [], []
    for name, module in model.named_modules():
        if not name or isinstance(module, BaseTunerLayer):
            continue
        match = check_target_module_exists(config, name)
        if isinstance(match, _ExcludedModule):
            if isinstance(module, SUPPORTED_LAYERS):
                skipped.append(name)
        elif match and isinstance(module, SUPPORTED_LAYERS):
            adapted.append(name)
            if rotated_features(module) % 2:
                odd.append(name)
    return TargetPlan(tuple(adapted), tuple(skipped), tuple(odd))
