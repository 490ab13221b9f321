"""ScaleCrafter's re-dilation (He et al., 2023) and FreeU for the one-step student above its training
resolution (paper 4.3, Fig. 14/25: the SD1.5 student at 1024² and 2048²). No training, no weights change.

Re-dilation. A chosen set of the U-Net's 3x3 convolutions is dilated by a factor ``f >= 1`` while the
body of :func:`redilated` runs, so that their receptive field grows with the image:

* integer ``f = d``: ``F.conv2d(x, W, b, stride, padding=d * (k - 1) // 2 per dim, dilation=d)``. For an
  odd kernel ``k`` this is the plain conv's output size (``H + 2p - d(k - 1) = H`` for any stride), so a
  strided conv (the downsamplers, stride 2) keeps the size of the plain stride-2 conv: the stride is
  left as it is, only the taps spread out;
* fractional ``f``: ScaleCrafter's rule, ``d = ceil(f)``: the input is resized bilinearly by ``d / f``
  (``F.interpolate(x, scale_factor=d / f, mode="bilinear")``), convolved with dilation ``d`` (padding as
  above), and the output is resized bilinearly back to the plain conv's output size;
* ``f = 1`` leaves the module untouched.

The mechanism: an integer factor sets the conv's own ``dilation`` and ``padding`` attributes (its
``forward`` then computes exactly the call above); a fractional one adds a forward pre-hook (the input
resize) and a forward hook (the output resize). On exit, also when the body raises, the attributes are
put back and the hooks removed. Refused (``ValueError``, before anything changes): names that are not
in the U-Net, modules that are not ``nn.Conv2d`` (a LoRA/LoRaD-wrapped conv: merge the adapter first; an
exported student pipeline is merged), and for ``f > 1`` convs where dilation is meaningless or the size
rule fails: 1x1 kernels (e.g. ``conv_shortcut``, the SD1.5 ``proj_in``/``proj_out``), even kernels,
already dilated convs, paddings other than ``(k - 1) // 2``, padding modes other than zeros.

Which layers (:func:`scalecrafter_factors`, ScaleCrafter's SD1.5 choice): every resnet ``conv1``/``conv2``
and the down/up-sampler ``conv`` of all levels but the outermost (``down_blocks.0``, ``up_blocks.<last>``,
``conv_in``, ``conv_out`` keep their dilation), with the factor ``min(1 + depth, scale)`` at depth
``depth`` (``down_blocks.i``: ``i``; ``up_blocks.j``: ``levels - 1 - j``; ``mid_block``: ``levels - 1``).
At 2x (1024² from 512²) every selected layer gets ``scale``; at 4x (2048²) SD1.5 gets 2 in
``down_blocks.1``/``up_blocks.2``, 3 in ``down_blocks.2``/``up_blocks.1`` and 4 in ``down_blocks.3``/
``up_blocks.0``/``mid_block``: a deeper level, already at a coarser resolution, gets the larger factor,
and no layer's dilation exceeds the scale. Scales above 4 are refused (beyond the paper's 2048²).
ScaleCrafter re-dilates only the early (high-noise) steps of a multi-step sampler; the one-step student
has one call at t = 999, so re-dilation is on for that call. Its noise-damped classifier-free guidance
does not apply (the student has no CFG), and the dispersed convolution is not implemented. The multi-step
teacher as ScaleCrafter samples it (early steps re-dilated, noise-damped CFG) is
:mod:`dkd.downstream.scalecrafter.teacher`.

FreeU (:func:`freeu`) goes through diffusers' ``UNet2DConditionModel.enable_freeu(s1, s2, b1, b2)`` /
``disable_freeu()`` (the factors are attributes of the ``up_blocks``), with ScaleCrafter's SD1.5 values.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES = ("sd15",)
MAX_SCALE = 4.0  # ScaleCrafter's SD1.5 settings end at 4x (2048² from 512²)
FREEU_KEYS = ("s1", "s2", "b1", "b2")
# A resnet conv1/conv2 or a down/up-sampler conv of a down block, the mid block or an up block.
_SELECTED = re.compile(
    r"(?:(down_blocks|up_blocks)\.(\d+)|mid_block)\.(?:resnets\.\d+\.conv[12]|(?:down|up)samplers\.\d+\.conv)"
)


def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------------------- math


def dilation_plan(factor: float) -> tuple[int, float]:
    """``(d, resize)`` of a factor: the integer dilation ``ceil(factor)`` and the input's resize factor
    ``d / factor`` (1.0 for an integer factor)."""
    if not _is_real(factor) or factor < 1:
        raise ValueError(f"a dilation factor must be a finite number >= 1; got {factor!r}.")
    d = math.ceil(factor)
    return d, (1.0 if d == factor else d / factor)


def dilated_padding(kernel_size: Sequence[int], d: int) -> tuple[int, ...]:
    """``d * (k - 1) // 2`` per dimension: for odd ``k`` the dilated conv keeps the plain output size."""
    return tuple(d * (k - 1) // 2 for k in kernel_size)


def conv_output_size(
    size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation=(1, 1)
) -> tuple[int, ...]:
    """The spatial output size of a convolution (``floor((n + 2p - d(k - 1) - 1) / s) + 1`` per dim)."""
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(size, kernel_size, stride, padding, dilation)
    )


def level_factor(depth: int, scale: float) -> float:
    """ScaleCrafter's SD1.5 factor of a U-Net level at ``depth`` (>= 1) for an upscaling ``scale``."""
    return float(min(1 + depth, scale))


# ----------------------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class ReDilation:
    """Which convolutions to re-dilate: module name in the U-Net -> dilation factor (>= 1)."""

    factors: Mapping[str, float]

    def __post_init__(self):
        if not isinstance(self.factors, Mapping):
            raise ValueError(f"factors must be a mapping name -> factor; got {type(self.factors).__name__}.")
        bad = {n: f for n, f in self.factors.items() if not isinstance(n, str) or not n or not _is_real(f) or f < 1}
        if bad:
            raise ValueError(f"re-dilation factors must map module names to finite numbers >= 1; got {bad}.")
        object.__setattr__(self, "factors", MappingProxyType({n: float(f) for n, f in self.factors.items()}))


def _check_conv(name: str, conv: nn.Conv2d) -> str | None:
    """Why ``conv`` cannot be re-dilated (None if it can)."""
    k = conv.kernel_size
    if all(size == 1 for size in k):
        return f"{name}: a 1x1 kernel (dilation is meaningless)"
    if any(size % 2 == 0 for size in k):
        return f"{name}: an even kernel {k} (the dilated conv would change the output size)"
    if tuple(conv.dilation) != (1,) * len(k):
        return f"{name}: already dilated {conv.dilation}"
    if isinstance(conv.padding, str) or tuple(conv.padding) != dilated_padding(k, 1):
        return f"{name}: padding {conv.padding!r}, not (k - 1) // 2"
    if conv.padding_mode != "zeros":
        return f"{name}: padding_mode {conv.padding_mode!r}, not 'zeros'"
    return None


def resolve(unet: nn.Module, factors: ReDilation | Mapping[str, float]) -> list[tuple[nn.Conv2d, float]]:
    """The convs of ``factors`` with a factor > 1, checked; one ``ValueError`` listing every problem."""
    plan = factors if isinstance(factors, ReDilation) else ReDilation(factors)
    modules = dict(unet.named_modules())
    missing = [n for n in plan.factors if n not in modules]
    if missing:
        raise ValueError(f"not modules of the U-Net: {missing}.")
    not_conv = {n: type(modules[n]).__name__ for n in plan.factors if not isinstance(modules[n], nn.Conv2d)}
    if not_conv:
        raise ValueError(f"only nn.Conv2d can be re-dilated (merge a conv adapter first); got {not_conv}.")
    active = {n: f for n, f in plan.factors.items() if f > 1}
    problems = [p for n in active if (p := _check_conv(n, modules[n]))]
    if problems:
        raise ValueError("cannot re-dilate " + "; ".join(problems) + ".")
    return [(modules[n], f) for n, f in active.items()]


# ------------------------------------------------------------------------------------- re-dilation


def _resize_hooks(conv: nn.Conv2d, resize: float) -> list:
    """The fractional rule's input resize (pre-hook) and output resize back to the plain size (hook);
    called before the conv's dilation and padding change (the plain size is the unchanged conv's)."""
    plain = (conv.kernel_size, conv.stride, tuple(conv.padding), tuple(conv.dilation))
    sizes: list[tuple[int, ...]] = []  # a stack: the plain output size of each call in flight

    def before(module, args):
        x, *rest = args
        sizes.append(conv_output_size(x.shape[-2:], *plain))
        return (F.interpolate(x, scale_factor=resize, mode="bilinear", align_corners=False), *rest)

    def after(module, args, output):
        return F.interpolate(output, size=sizes.pop(), mode="bilinear", align_corners=False)

    return [conv.register_forward_pre_hook(before), conv.register_forward_hook(after)]


@contextlib.contextmanager
def redilated(unet: nn.Module, factors: ReDilation | Mapping[str, float]) -> Iterator[nn.Module]:
    """``unet`` with the convs of ``factors`` re-dilated inside the context (see the module docstring);
    every module exactly as before on exit, also when the body raises."""
    active = resolve(unet, factors)
    saved, handles = [], []
    try:
        for conv, factor in active:
            d, resize = dilation_plan(factor)
            saved.append((conv, conv.dilation, conv.padding))
            if resize != 1.0:
                handles += _resize_hooks(conv, resize)
            conv.dilation = (d,) * len(conv.kernel_size)
            conv.padding = dilated_padding(conv.kernel_size, d)
        yield unet
    finally:
        for handle in handles:
            handle.remove()
        for conv, dilation, padding in saved:
            conv.dilation, conv.padding = dilation, padding


def _unet_levels(unet: nn.Module) -> int:
    """The number of resolution levels of a diffusers SD U-Net (ValueError for anything else)."""
    down, up = getattr(unet, "down_blocks", None), getattr(unet, "up_blocks", None)
    if down is None or up is None or getattr(unet, "mid_block", None) is None or len(down) != len(up) or len(down) < 2:
        raise ValueError(f"{type(unet).__name__} is not an SD U-Net (down_blocks, mid_block, up_blocks).")
    return len(down)


def scalecrafter_factors(
    unet: nn.Module, scale: float, *, family: str = "sd15", min_depth: int = 1
) -> dict[str, float]:
    """ScaleCrafter's SD1.5 re-dilation of ``unet`` for an upscaling ``scale`` (1 <= scale <= 4; 2 for
    1024² from 512², 4 for 2048²): module name -> ``min(1 + depth, scale)`` for the resnet convs and
    resampler convs of every level at ``depth >= min_depth`` (1: all but the outermost), from a walk over
    ``unet.named_modules()``. ``min_depth=2`` also leaves the shallowest re-dilated level as it is: the
    pass of ScaleCrafter's noise-damped guidance at 2048² (:mod:`dkd.downstream.scalecrafter.teacher`)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}.")
    if not _is_real(scale) or not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be a number in [1, {MAX_SCALE:g}]; got {scale!r}.")
    if isinstance(min_depth, bool) or not isinstance(min_depth, int) or min_depth < 1:
        raise ValueError(f"min_depth must be an int >= 1 (the outermost level is never re-dilated); got {min_depth!r}.")
    levels = _unet_levels(unet)
    factors = {}
    for name, module in unet.named_modules():
        match = _SELECTED.fullmatch(name)
        if match is None or not isinstance(module, nn.Conv2d):
            continue
        kind, index = match.group(1), match.group(2)
        depth = levels - 1 if kind is None else int(index) if kind == "down_blocks" else levels - 1 - int(index)
        if depth >= min_depth:
            factors[name] = level_factor(depth, scale)
    return factors


# -------------------------------------------------------------------------------------------- FreeU


@contextlib.contextmanager
def freeu(
    unet: nn.Module, enabled: bool, *, b1: float = 1.2, b2: float = 1.4, s1: float = 0.9, s2: float = 0.2
) -> Iterator[nn.Module]:
    """FreeU on (diffusers' ``unet.enable_freeu(s1, s2, b1, b2)``) or off (``unet.disable_freeu()``) inside
    the context; the up blocks' previous FreeU attributes (set, ``None`` or absent) exactly restored on exit.
    Defaults: ScaleCrafter's SD1.5 values. diffusers treats a zero factor as FreeU off: factors must be > 0."""
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be a bool; got {enabled!r}.")
    values = {"s1": s1, "s2": s2, "b1": b1, "b2": b2}
    if not all(_is_real(v) and v > 0 for v in values.values()):
        raise ValueError(f"FreeU factors must be finite numbers > 0; got {values}.")
    if not hasattr(unet, "enable_freeu") or not hasattr(unet, "up_blocks"):
        raise ValueError(f"{type(unet).__name__} has no FreeU (diffusers' enable_freeu on a U-Net).")
    blocks = list(unet.up_blocks)
    before = [{k: vars(block)[k] for k in FREEU_KEYS if k in vars(block)} for block in blocks]
    try:
        if enabled:
            unet.enable_freeu(**values)
        else:
            unet.disable_freeu()
        yield unet
    finally:
        for block, state in zip(blocks, before, strict=True):
            for key in FREEU_KEYS:
                if key in state:
                    setattr(block, key, state[key])
                elif key in vars(block):
                    delattr(block, key)


# ----------------------------------------------------------------------------- one-step generation


@dataclass(frozen=True)
class HighResSpec:
    """An output resolution of the one-step student and the training-free tricks it is generated with;
    ``freeu_factors``: FreeU's ``s1, s2, b1, b2`` (any of them) when ``freeu`` is on, None for the defaults
    of :func:`freeu` (ScaleCrafter's SD1.5 values)."""

    height: int
    width: int
    redilate: bool = True
    freeu: bool = False
    freeu_factors: Mapping[str, float] | None = None

    def __post_init__(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % 8:
                raise ValueError(f"{name} must be a positive multiple of 8 (the SD VAE's factor); got {value!r}.")
        for name in ("redilate", "freeu"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool; got {getattr(self, name)!r}.")
        factors = self.freeu_factors
        if factors is not None:
            if not self.freeu or not isinstance(factors, Mapping) or not set(factors) <= set(FREEU_KEYS):
                raise ValueError(f"freeu_factors: a mapping of some of {FREEU_KEYS}, with freeu on; got {factors!r}.")
            if not all(_is_real(v) and v > 0 for v in factors.values()):
                raise ValueError(f"FreeU factors must be finite numbers > 0; got {dict(factors)}.")
            object.__setattr__(self, "freeu_factors", MappingProxyType({k: float(v) for k, v in factors.items()}))


def vae_factor(teacher) -> int:
    """Pixels per latent pixel: ``2 ** (len(vae block_out_channels) - 1)`` (8 for SD, 2 for the tiny
    VAE), 1 for a pixel-space backbone."""
    if not teacher.spec.latent:
        return 1
    if teacher.vae is None:
        raise ValueError(f"{teacher.spec.name} was loaded without its VAE: its latent size is unknown.")
    return 2 ** (len(teacher.vae.config.block_out_channels) - 1)


def high_res_geometry(teacher, spec: HighResSpec) -> tuple[tuple[int, int, int], float]:
    """The latent shape ``(C, height / f, width / f)`` of ``spec`` and its upscaling over the student's
    native latent (the larger of the two side ratios: the receptive field must cover the longer side)."""
    if teacher.family != "sd":
        raise ValueError(f"ScaleCrafter needs a U-Net backbone; {teacher.spec.name} is {teacher.family!r}.")
    unet, f = teacher.denoiser, vae_factor(teacher)
    step = f * 2 ** sum(1 for block in unet.down_blocks if getattr(block, "downsamplers", None))
    if spec.height % step or spec.width % step:
        raise ValueError(f"{spec.height}x{spec.width} is not a multiple of {step} (VAE x U-Net downsampling).")
    channels, native_h, native_w = teacher.latent_shape
    h, w = spec.height // f, spec.width // f
    return (channels, h, w), max(h / native_h, w / native_w)


@torch.no_grad()
def high_res_latents(pipe, prompts: Sequence[str], seeds: Sequence[int], spec: HighResSpec) -> torch.Tensor:
    """``OneStepPipeline.latents`` at ``spec``'s resolution: the student (``pipe.teacher.denoiser``) called once
    at ``pipe.t_init`` on per-seed noise of the larger latent, re-dilated (:func:`scalecrafter_factors` at the
    upscaling) if ``spec.redilate``, with FreeU on (``spec.freeu_factors``) or off as ``spec.freeu`` says."""
    from ...sampling.pipeline import seeded_noise
    from ...train.step import generate

    pipe.check(prompts, seeds)
    teacher = pipe.teacher
    unet = teacher.denoiser
    shape, scale = high_res_geometry(teacher, spec)
    factors = scalecrafter_factors(unet, scale) if spec.redilate else {}
    noise = seeded_noise(seeds, shape, device=next(unet.parameters()).device, dtype=unet.dtype)
    embeds = teacher.encode(list(prompts))
    with redilated(unet, factors), freeu(unet, spec.freeu, **(spec.freeu_factors or {})):
        return generate(teacher, unet, noise, embeds, pipe.t_init, pipe.scaled_input)


def one_step_high_res(pipe, prompts: Sequence[str], seeds: Sequence[int], spec: HighResSpec, *, batch_size: int = 4):
    """One PIL image of ``spec.height x spec.width`` per (prompt, seed) from a ``OneStepPipeline``,
    ``batch_size`` at a time (an image does not depend on its batch)."""
    from ...sampling.pipeline import to_pil

    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    pipe.check(prompts, seeds)
    images = []
    for start in range(0, len(prompts), batch_size):
        stop = start + batch_size
        images += to_pil(pipe.teacher.decode(high_res_latents(pipe, prompts[start:stop], seeds[start:stop], spec)))
    return images
