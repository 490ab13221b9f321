"""LoRaD — Low-rank Rotation of weight Direction — as a PEFT method.

Importing this package registers the method with PEFT, after which ``LoRaDConfig`` works
with ``peft.get_peft_model``, ``peft.inject_adapter_in_model``, diffusers'
``model.add_adapter``, ``save_pretrained`` / ``PeftModel.from_pretrained``, ``merge``,
``unmerge``, ``merge_and_unload`` and ``disable_adapter``.
"""

from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method

from .config import LoRaDConfig
from .layer import Conv2d, Linear, LoRaDLayer, OddDimensionError
from .model import LoRaDModel, TargetPlan, plan_targets
from .registry import LORAD_PEFT_TYPE

__all__ = [
    "Conv2d",
    "Linear",
    "LoRaDConfig",
    "LoRaDLayer",
    "LoRaDModel",
    "OddDimensionError",
    "TargetPlan",
    "plan_targets",
]

if LORAD_PEFT_TYPE not in PEFT_TYPE_TO_TUNER_MAPPING:
    register_peft_method(name="lorad", config_cls=LoRaDConfig, model_cls=LoRaDModel, prefix="lorad_")
