"""DreamBooth on SD1.5 with LoRaD, LoRA or full fine-tuning (paper F.2, Fig. 7/24): the pure parts.

The paper fine-tunes the U-Net on one DreamBooth subject (``google/dreambooth``: 30 subjects in 15 classes,
4-6 images each) with the prior-preservation loss (weight 1.0, 200 class images) and Adam: full fine-tuning
(``ft``) at lr 5e-6 for 800 steps; LoRA and LoRaD at rank 64, lr 1e-4, 1500 steps. Instance prompt
"a photo of sks {class}", class prompt "a photo of {class}". What ``train_dreambooth_lora.py`` (diffusers)
does with LoRA is kept for both adapters: ``unet.requires_grad_(False)``, then ``unet.add_adapter(config)``
(LoRaD goes through it because ``dkd.lorad`` registers its PEFT type), the batch holding the instance
examples then as many class examples, the two MSEs taken in float32.

* :class:`DreamBoothConfig`: the run's settings, :meth:`DreamBoothConfig.paper` the paper's per method
  (:func:`arm_config`: with settings over them).
* :func:`prior_preservation_loss`: ``MSE(instance) + prior_weight * MSE(prior)`` as ``(loss, logs)``.
* :func:`adapter_config`, :func:`apply_adapter`, :func:`trainable_parameters`: the adapter of a method;
  :func:`save_adapter` / :func:`load_adapter` its weights (PEFT's key layout, safetensors).
* :func:`instance_images`: a subject's photos as the training tensor (diffusers' DreamBooth transforms);
  :func:`resized_photo` and :func:`cropped_tensor`, its two halves for one photo (the trainer,
  ``dkd.downstream.dreambooth.train``, resizes each photo once and crops it per step).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from ...adapters import count_parameters
from ...lorad import LoRaDConfig
from ...metrics.images import list_images

METHODS = ("lorad", "lora", "ft")
# diffusers' train_dreambooth_lora.py: the attention projections (add_k_proj/add_v_proj exist only in
# U-Nets with added key/value projections; SD1.5 has none, and PEFT skips names that match nothing).
DREAMBOOTH_TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj")
PAPER_SCHEDULE = {"ft": (5e-6, 800), "lora": (1e-4, 1500), "lorad": (1e-4, 1500)}  # (lr, steps), paper F.2
PAPER_RANK = 64
ADAPTER_FILE = "adapter_model.safetensors"
_ADAPTER_PREFIX = {"lorad": "lorad_", "lora": "lora_"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class DreamBoothConfig:
    """One DreamBooth run on the U-Net (the text encoder stays frozen, as in the paper's description).

    Args:
        method: ``"lorad"``, ``"lora"`` or ``"ft"`` (every U-Net parameter trained).
        lr, steps: Adam's learning rate (weight decay 0: the paper says "Adam") and the number of steps.
        rank: the adapter's rank (LoRA: ``lora_alpha = rank``, scale 1, as diffusers' script); unused by ``ft``.
        prior_weight: weight of the class (prior) MSE; class_images: how many class images to sample
            from the frozen model with the class prompt before training.
        batch_size: instance images per step; the batch holds as many class images after them.
        resolution: training resolution in pixels (a multiple of 8, the VAE's downsampling).
        seed: the run's seed (adapter initialisation, crops, noise).
        targets: module names (PEFT suffix match) the adapter wraps. The paper does not say which modules
            LoRaD targets in this experiment; the default is diffusers' DreamBooth-LoRA list, used for LoRA
            and LoRaD alike (the distillation's "all linear" set, ``dkd.adapters``, is the obvious variant).
        center_crop: center crop (True) or seeded random crop (False, diffusers' default) of the photos.
        grad_clip: the gradient-norm clip of each step (diffusers' DreamBooth scripts: ``max_grad_norm``
            1.0; the paper says nothing), None for none.
    """

    method: str
    lr: float
    steps: int
    rank: int = PAPER_RANK
    prior_weight: float = 1.0
    class_images: int = 200
    batch_size: int = 1
    resolution: int = 512
    seed: int = 0
    targets: tuple[str, ...] = DREAMBOOTH_TARGETS
    center_crop: bool = False
    grad_clip: float | None = 1.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}.")
        checks = [
            (("lr",), lambda v: _is_number(v) and v > 0, "a finite number > 0"),
            (("prior_weight",), lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
            (("steps", "rank", "class_images", "batch_size"), lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            (("resolution",), lambda v: _is_int(v) and v >= 8 and v % 8 == 0, "a positive multiple of 8"),
            (("seed",), _is_int, "an int"),
            (("center_crop",), lambda v: isinstance(v, bool), "a bool"),
            (("grad_clip",), lambda v: v is None or (_is_number(v) and v > 0), "None or a finite number > 0"),
        ]
        for names, ok, what in checks:
            for name in names:
                if not ok(getattr(self, name)):
                    raise ValueError(f"{name} must be {what}; got {getattr(self, name)!r}.")
        targets = () if isinstance(self.targets, str) else tuple(self.targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"targets must be a non-empty sequence of module names; got {self.targets!r}.")
        object.__setattr__(self, "targets", targets)

    @classmethod
    def paper(cls, method: str, **overrides) -> DreamBoothConfig:
        """The paper's settings of ``method`` (F.2): ``ft`` lr 5e-6, 800 steps; ``lora`` / ``lorad`` lr 1e-4,
        1500 steps, rank 64; prior weight 1.0 and 200 class images for all; ``overrides`` replace fields."""
        if method not in PAPER_SCHEDULE:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
        lr, steps = PAPER_SCHEDULE[method]
        return cls(**{"method": method, "lr": lr, "steps": steps, "rank": PAPER_RANK, **overrides})


def arm_config(method: str, *settings: dict | None) -> DreamBoothConfig:
    """:meth:`DreamBoothConfig.paper` of ``method`` with each of ``settings`` (mappings of its fields, later
    ones winning: e.g. the settings of every method, then this method's) over it; an unknown field or
    ``method`` among them is one ValueError."""
    merged = {}
    for part in settings:
        merged.update(part or {})
    fields = set(DreamBoothConfig.__dataclass_fields__) - {"method"}
    unknown = sorted(set(merged) - fields)
    if unknown:
        raise ValueError(f"unknown DreamBooth setting(s) {unknown}; known: {sorted(fields)}.")
    return DreamBoothConfig.paper(method, **merged)


def _check_words(name: str, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string; got {value!r}.")


def instance_prompt(class_name: str, identifier: str = "sks") -> str:
    """``"a photo of {identifier} {class_name}"``: the prompt of the subject's photos."""
    _check_words("class_name", class_name)
    _check_words("identifier", identifier)
    if any(c.isspace() for c in identifier):
        raise ValueError(f"identifier must be one word (a rare token); got {identifier!r}.")
    return f"a photo of {identifier} {class_name.strip()}"


def class_prompt(class_name: str) -> str:
    """``"a photo of {class_name}"``: the prompt of the class (prior) images."""
    _check_words("class_name", class_name)
    return f"a photo of {class_name.strip()}"


def prior_preservation_loss(
    pred: torch.Tensor, target: torch.Tensor, *, prior_weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DreamBooth's loss on a batch whose first half are instance examples and second half class examples
    (diffusers' ``torch.chunk(pred, 2)``): ``MSE(instance) + prior_weight * MSE(prior)``, each a mean over
    all its elements, computed in float32 (float64 inputs stay float64).

    Returns ``(loss, logs)`` with ``logs`` the detached ``instance_loss`` and ``prior_loss``.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor) or pred.shape != target.shape:
        shapes = [tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__ for x in (pred, target)]
        raise ValueError(f"pred and target must be tensors of one shape; got {shapes[0]} and {shapes[1]}.")
    if pred.ndim == 0 or pred.shape[0] == 0 or pred.shape[0] % 2:
        raise ValueError(
            f"the batch must hold instance then class examples in two equal halves (an even size >= 2); "
            f"got shape {tuple(pred.shape)}."
        )
    if not _is_number(prior_weight) or prior_weight < 0:
        raise ValueError(f"prior_weight must be a finite number >= 0; got {prior_weight!r}.")
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    pred_instance, pred_prior = torch.chunk(pred.to(dtype), 2, dim=0)
    target_instance, target_prior = torch.chunk(target.to(dtype), 2, dim=0)
    instance = F.mse_loss(pred_instance, target_instance, reduction="mean")
    prior = F.mse_loss(pred_prior, target_prior, reduction="mean")
    return instance + prior_weight * prior, {"instance_loss": instance.detach(), "prior_loss": prior.detach()}


def adapter_config(config: DreamBoothConfig):
    """The PEFT config of ``config.method``: LoRaD (A = 0, B Xavier: the adapted U-Net starts equal to the
    base), LoRA as diffusers' DreamBooth script builds it (``lora_alpha = r``, ``init_lora_weights="gaussian"``:
    A normal with std 1/r, B = 0), or None for ``ft``."""
    if config.method == "ft":
        return None
    if config.method == "lorad":
        return LoRaDConfig(r=config.rank, target_modules=list(config.targets), init_weights="zero_xavier")
    from peft import LoraConfig

    return LoraConfig(
        r=config.rank, lora_alpha=config.rank, init_lora_weights="gaussian", target_modules=list(config.targets)
    )


def apply_adapter(unet: nn.Module, config: DreamBoothConfig) -> nn.Module:
    """``unet`` (in place) made trainable as ``config.method`` says: every parameter frozen, then the adapter
    added with diffusers' ``unet.add_adapter`` (only its parameters train); ``ft``: every parameter trains.

    The adapter's random initialisation draws from torch's global generator: seed it first for a
    reproducible run (``torch.manual_seed(config.seed)``).
    """
    peft_config = adapter_config(config)
    if peft_config is None:
        return unet.requires_grad_(True)
    if not hasattr(unet, "add_adapter"):
        raise ValueError(f"the U-Net must be a diffusers model with add_adapter; got {type(unet).__name__}.")
    unet.requires_grad_(False)
    unet.add_adapter(peft_config)
    return unet


def trainable_parameters(unet: nn.Module) -> int:
    """The number of parameters of ``unet`` that require grad (``dkd.adapters.count_parameters``)."""
    return count_parameters(unet, trainable_only=True)


def _check_adapter(unet: nn.Module | None, config: DreamBoothConfig) -> None:
    """Refuse ``ft`` (no adapter) and, if ``unet`` is given, a U-Net without the adapter ``default``."""
    if config.method == "ft":
        raise ValueError("method 'ft' has no adapter: save or load the whole U-Net (save_pretrained).")
    if unet is not None and "default" not in getattr(unet, "peft_config", {}):
        raise ValueError("the U-Net has no adapter 'default' (apply_adapter adds it).")


def save_adapter(unet: nn.Module, path: str | os.PathLike, config: DreamBoothConfig) -> Path:
    """The adapter weights of ``unet`` (PEFT's ``get_peft_model_state_dict``: no adapter name in the keys)
    as one safetensors file at ``path``; with ``config`` they load back through :func:`load_adapter`."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    _check_adapter(unet, config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(unet, adapter_name="default")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
    return path


def load_adapter(unet: nn.Module, path: str | os.PathLike, config: DreamBoothConfig) -> nn.Module:
    """``unet`` with ``config``'s adapter added (:func:`apply_adapter`) and its weights read from ``path``
    (written by :func:`save_adapter`); every adapter weight must be in the file and nothing else."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    _check_adapter(None, config)
    tensors = load_file(str(path))
    apply_adapter(unet, config)
    result = set_peft_model_state_dict(unet, tensors, adapter_name="default")
    prefix = _ADAPTER_PREFIX[config.method]
    missing = [k for k in result.missing_keys if prefix in k]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{str(path)!r} does not match the {config.method} adapter of {config.targets}: missing "
            f"{missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}."
        )
    return unet


def _read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read the image {str(path)!r}: {err}") from None


def resized_photo(path: str | os.PathLike, resolution: int) -> Image.Image:
    """The image at ``path`` with its EXIF orientation applied, as RGB, its shorter side resized to
    ``resolution`` (bilinear, on the PIL image): the first half of diffusers' DreamBooth transforms."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    return TF.resize(_read_rgb(Path(path)), resolution, interpolation=InterpolationMode.BILINEAR)


def cropped_tensor(
    image: Image.Image, resolution: int, *, center_crop: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The second half: a center crop, or a random crop (top then left offset drawn from ``generator``),
    of ``resolution`` pixels, as a float32 ``(3, resolution, resolution)`` tensor in [-1, 1]."""
    from torchvision.transforms import functional as TF

    if center_crop:
        image = TF.center_crop(image, resolution)
    else:
        width, height = image.size
        top = int(torch.randint(0, height - resolution + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - resolution + 1, (1,), generator=generator))
        image = TF.crop(image, top, left, resolution, resolution)
    return TF.normalize(TF.to_tensor(image), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def instance_images(folder: str | os.PathLike, *, resolution: int, center_crop: bool, seed: int = 0) -> torch.Tensor:
    """The images of ``folder`` (sorted by name; ``dkd.metrics.images.list_images``) as a float32 tensor
    ``(N, 3, resolution, resolution)`` in [-1, 1], with the transforms of diffusers' DreamBooth scripts:
    EXIF orientation applied, RGB, the shorter side resized to ``resolution`` (bilinear, on the PIL image),
    a center crop or a random crop (its offsets drawn from a ``torch.Generator`` seeded with ``seed``,
    one crop per image per call), then ``(x - 0.5) / 0.5`` (:func:`resized_photo`, :func:`cropped_tensor`).
    """
    if not _is_int(resolution) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer; got {resolution!r}.")
    if not isinstance(center_crop, bool) or not _is_int(seed):
        raise ValueError(f"center_crop must be a bool and seed an int; got {center_crop!r}, {seed!r}.")
    files = list_images(folder)
    if not files:
        raise ValueError(f"no images (.png, .jpg, .jpeg, .webp) in {str(folder)!r}.")
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [cropped_tensor(resized_photo(p, resolution), resolution, center_crop=center_crop, generator=generator)
         for p in files]
    )  # fmt: skip
