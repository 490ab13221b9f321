"""One place that maps (backbone, role, method, rank, layers, init) to trainable parameters.

Target sets (diffusers module names, PEFT suffix matching) reproduce the paper's parameter
counts exactly (``docs/reference.md`` section 1; checked by ``python -m dkd params``):

* SD student: attention ``to_q/to_k/to_v/to_out.0`` (self and cross), ``ff.net.0.proj``,
  ``ff.net.2`` and the resnets' ``time_emb_proj`` (not ``time_embedding.linear_1/2``); SD2.1
  adds ``proj_in/proj_out`` (Linear there; 1x1 Conv2d in SD1.5).
* fake model: the student's targets without ``time_emb_proj`` (SD1.5 matches Table 3; the
  paper gives no fake count for SD2.1 or PixArt-alpha, where the same rule is applied).
* PixArt-alpha: every Linear of ``transformer_blocks``, ``caption_projection.linear_1/2``,
  the final ``proj_out``; not ``adaln_single``.
* ``linear+conv`` (Table 7) adds every Conv2d except ``conv_in`` and ``conv_out``.
* LoRA/DoRA (Table 2) add ``proj_in/proj_out`` to the student's targets.
* ``ft`` trains every parameter of the denoiser (the DMD2 image-free reproduction).
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, PeftConfig, inject_adapter_in_model
from torch import nn

from . import vocabulary
from .backbones import backbone_spec, build_denoiser
from .lorad import LoRaDConfig

ROLES = ("student", "fake")
METHODS = vocabulary.METHODS  # the run names' methods (dkd/vocabulary.yaml)
LAYERS = ("linear", "linear+conv")
INITS = ("zero_xavier", "xavier_xavier")

_ATTN_FF = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
_TIME = ["time_emb_proj"]
_STUDENT = {
    "sd15": _ATTN_FF + _TIME,
    "sd21": _ATTN_FF + _TIME + ["proj_in", "proj_out"],
    "pixart256": _ATTN_FF + ["caption_projection.linear_1", "caption_projection.linear_2", "proj_out"],
}
# Every Conv2d but conv_in/conv_out: SD resnets, resamplers and (SD1.5) 1x1 projections;
# PixArt's patch embedding.
_CONVS = {
    "sd15": ["conv1", "conv2", "conv_shortcut", "conv", "proj_in", "proj_out"],
    "sd21": ["conv1", "conv2", "conv_shortcut", "conv"],
    "pixart256": ["pos_embed.proj"],
}
_LORA_EXTRA = ["proj_in", "proj_out"]
# The tiny backbones (and the toy U-Net) have SD1.5's and PixArt-alpha's module layout.
_PROFILE = {"tiny-sd": "sd15", "tiny-pixart": "pixart256", "toy": "sd15"}


@dataclass(frozen=True)
class AdapterSpec:
    """What is trained in one model of a distillation run (student or fake)."""

    backbone: str
    role: str = "student"
    method: str = "lorad"
    rank: int = 256
    layers: str = "linear"
    init: str = "zero_xavier"
    targets: tuple[str, ...] | None = None  # LoRA only: these modules instead of the role's (SwiftBrush's fake)
    alpha: float | None = None  # LoRA only: lora_alpha (scale alpha / rank); None: the rank (scale 1)

    def __post_init__(self):
        backbone_spec(self.backbone)
        if (self.targets is not None or self.alpha is not None) and self.method != "lora":
            raise ValueError(f"targets and alpha are LoRA settings; method is {self.method!r}.")
        if self.targets is not None:
            targets = tuple(self.targets)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ValueError(f"targets must be module names; got {self.targets!r}.")
            object.__setattr__(self, "targets", targets)
        if self.alpha is not None and (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))):
            raise ValueError(f"alpha must be a number; got {self.alpha!r}.")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be > 0; got {self.alpha!r}.")
        for name, value, choices in (
            ("role", self.role, ROLES),
            ("method", self.method, METHODS),
            ("layers", self.layers, LAYERS),
            ("init", self.init, INITS),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}; got {value!r}.")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"rank must be a positive integer; got {self.rank!r}.")
        if self.method == "ft" and self.layers != "linear":
            raise ValueError("method 'ft' trains every parameter; layers must stay 'linear' (the default).")

    def target_modules(self) -> list[str]:
        """PEFT target names (exact or dotted suffix) of this spec; empty for ``ft``."""
        if self.method == "ft":
            return []
        if self.targets is not None:
            return list(self.targets)
        profile = _PROFILE.get(self.backbone, self.backbone)
        targets = list(_STUDENT[profile])
        if self.role == "fake":
            targets = [t for t in targets if t not in _TIME]
        if self.method in ("lora", "dora"):
            targets += [t for t in _LORA_EXTRA if t not in targets]
        if self.layers == "linear+conv":
            targets += [t for t in _CONVS[profile] if t not in targets]
        return targets

    def peft_config(self) -> PeftConfig | None:
        """The PEFT config of this spec (None for ``ft``)."""
        if self.method == "ft":
            return None
        if self.method == "lorad":
            return LoRaDConfig(r=self.rank, target_modules=self.target_modules(), init_weights=self.init)
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.rank if self.alpha is None else self.alpha,
            target_modules=self.target_modules(),
            use_dora=self.method == "dora",
            init_lora_weights=self.init == "zero_xavier",
        )


def apply_adapter(
    model: nn.Module, spec: AdapterSpec, adapter_name: str = "default", low_cpu_mem_usage: bool = False
) -> nn.Module:
    """Make ``model`` trainable as ``spec`` says: inject the adapter (in place) or unfreeze all."""
    config = spec.peft_config()
    if config is None:
        return model.requires_grad_(True)
    model.requires_grad_(False)
    return inject_adapter_in_model(config, model, adapter_name=adapter_name, low_cpu_mem_usage=low_cpu_mem_usage)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_trainable(spec: AdapterSpec) -> int:
    """Trainable parameters of ``spec`` on its backbone, built on the meta device (no weights)."""
    model = build_denoiser(spec.backbone, device="meta")
    return count_parameters(apply_adapter(model, spec, low_cpu_mem_usage=True))
