"""ControlNet on the one-step student (paper 4.3, appendix F.2).

The exported student (``dkd.train.export``: a merged SD pipeline folder plus ``dkd_student.json``) runs
in diffusers' ``StableDiffusionControlNetPipeline`` with a stock SD1.5 ControlNet; the reference is SD1.5
with the same ControlNet under DDIM, 50 steps, CFG 7.5. The one-step path must give what
``dkd.sampling.pipeline.OneStepPipeline`` gives: one U-Net call at ``t_init`` on the noise, x0 read off
the prediction, no CFG. What that takes in diffusers 0.42:

* ``LCMScheduler`` with ``timesteps=[t_init]``: its one (last) step returns its boundary-condition
  ``c_out x0_hat + c_skip x_t`` without adding noise. ``timestep_scaling=1e6`` puts ``c_skip`` under
  ``3e-13`` for every ``t >= 1`` (the stock 10 leaves ``2.5e-9`` at ``t = 999``), so the step is
  ``x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)`` to float32 rounding. ``DDIMScheduler`` cannot
  do it: SD's config (``timestep_spacing="leading"``, ``steps_offset=1``) puts one DDIM step at t = 1
  and its ``set_timesteps`` takes no ``timesteps=``.
* ``guidance_scale=1`` (``> 1`` doubles the batch and applies CFG the student was not trained with);
  ``control_guidance_start=0``, ``control_guidance_end=1``: with one step the pipeline's
  ``controlnet_keep`` is 1 or 0, and any start > 0 or end < 1 switches the ControlNet off.
* The student's generator input is handled, not refused: ``t_init`` goes in ``timesteps=[t_init]`` and
  ``scaled_input`` (SiD-LSG's ``sigma_t z``) becomes the scheduler's ``init_noise_sigma``, by which the
  pipeline multiplies its starting noise. ``abar`` is the folder's own schedule, checked equal to the
  ``DDPMScheduler`` the project's ``Teacher`` builds from the same config.

Condition images: :func:`canny_edges` (OpenCV, else scikit-image). Depth and OpenPose conditions need
their annotators (``controlnet_aux``), which this module does not provide. Scores and timing:
:func:`edge_f1`, :func:`timed_parts`, :func:`time_saving`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from PIL import Image

from ...backbones.specs import backbone_spec
from ...metrics.timing import REPEATS, WARMUP, _synchronize, time_call, timing_summary
from ...sampling.pipeline import STUDENT_INFO, student_info
from ...train.schedule import alpha_sigma

CONTROL_KINDS = ("canny", "depth", "openpose")
TIMESTEP_SCALING = 1e6  # LCM's boundary condition: c_skip = 0.25 / ((t * scaling)^2 + 0.25)
PARTS = ("text_encoder", "denoise", "vae_decode")


@dataclass(frozen=True)
class HubModel:
    """A model on the hub; ``revision``: the commit to pin, None for the main branch (no commit is
    recorded here: pin one once it has been read off the hub, never a guessed hash)."""

    repo: str
    revision: str | None = None


STOCK_CONTROLNETS = MappingProxyType(
    {
        "canny": HubModel("lllyasviel/control_v11p_sd15_canny"),
        "depth": HubModel("lllyasviel/control_v11f1p_sd15_depth"),
        "openpose": HubModel("lllyasviel/control_v11p_sd15_openpose"),
    }
)


@dataclass(frozen=True)
class ControlSpec:
    """One control: ``kind``; ``controlnet``, a hub id or a folder (None: the stock SD1.5 v1.1 model
    of ``kind``, with its pinned ``revision``); the ControlNet's ``conditioning_scale``; the
    ``canny_thresholds`` (low, high) of the canny annotator (ControlNet's own defaults, 100 and 200)."""

    kind: str
    controlnet: str | None = None
    revision: str | None = None
    conditioning_scale: float = 1.0
    canny_thresholds: tuple[float, float] = (100, 200)

    def __post_init__(self):
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"kind must be one of {CONTROL_KINDS}; got {self.kind!r}.")
        if self.controlnet is not None and (not isinstance(self.controlnet, str) or not self.controlnet):
            raise ValueError(f"controlnet must be a hub id or a folder (a non-empty string); got {self.controlnet!r}.")
        scale = self.conditioning_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"conditioning_scale must be a finite number >= 0; got {scale!r}.")
        _check_thresholds(*self.canny_thresholds)
        if self.controlnet is None:
            stock = STOCK_CONTROLNETS[self.kind]
            object.__setattr__(self, "controlnet", stock.repo)
            object.__setattr__(self, "revision", self.revision or stock.revision)
        object.__setattr__(self, "canny_thresholds", tuple(self.canny_thresholds))


def _check_thresholds(low, high) -> None:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers or not 0 <= low <= high:
        raise ValueError(f"canny thresholds must be numbers with 0 <= low <= high; got ({low!r}, {high!r}).")


def load_controlnet(controlnet, *, dtype: torch.dtype = torch.float32):
    """A ``ControlNetModel`` from a :class:`ControlSpec`, a hub id or a folder (a loaded model is
    returned as it is)."""
    from diffusers import ControlNetModel

    if isinstance(controlnet, ControlNetModel):
        return controlnet
    spec = controlnet if isinstance(controlnet, ControlSpec) else None
    source = spec.controlnet if spec else controlnet
    if not isinstance(source, (str, Path)):
        raise ValueError(f"controlnet must be a ControlSpec, a hub id, a folder or a ControlNetModel; got {source!r}.")
    local = Path(source).expanduser().is_dir()
    revision = spec.revision if spec and not local else None
    return ControlNetModel.from_pretrained(str(source), revision=revision, dtype=dtype, local_files_only=local)


def student_generator_input(folder: str | Path) -> tuple[int, bool]:
    """``(t_init, scaled_input)`` of an exported student (its ``dkd_student.json``; (999, False) without
    one, the paper's generator), after checking that it is an SD-family U-Net and ``t_init >= 1``."""
    info = student_info(folder)
    if "backbone" in info and backbone_spec(info["backbone"]).family != "sd":
        raise ValueError(f"ControlNet needs an SD U-Net student; {folder} holds a {info['backbone']!r} one.")
    t_init, scaled = info.get("t_init", 999), info.get("scaled_input", False)
    if isinstance(t_init, bool) or not isinstance(t_init, int) or t_init < 1 or not isinstance(scaled, bool):
        raise ValueError(f"{STUDENT_INFO} of {folder}: need an integer t_init >= 1 and a boolean scaled_input; "
                         f"got {t_init!r}, {scaled!r}.")  # fmt: skip
    return t_init, scaled


def one_step_scheduler(config, t_init: int = 999, scaled_input: bool = False):
    """The ``LCMScheduler`` whose single step at ``t_init`` is the project's one-step x0
    (``dkd.train.schedule.one_step_x0``): same ``abar`` (checked), no clipping or thresholding, a
    negligible ``c_skip``, and ``init_noise_sigma = sigma_{t_init}`` for a ``scaled_input`` student."""
    from diffusers import DDPMScheduler, LCMScheduler

    def accepted(cls) -> dict:  # the config keys ``cls`` takes (the others would only be warned about)
        return {k: v for k, v in dict(config).items() if k in inspect.signature(cls.__init__).parameters}

    own = {**accepted(LCMScheduler), "clip_sample": False, "thresholding": False, "timestep_scaling": TIMESTEP_SCALING}
    scheduler = LCMScheduler.from_config(own)
    if not 1 <= t_init < scheduler.config.num_train_timesteps:
        raise ValueError(f"t_init must be in [1, {scheduler.config.num_train_timesteps - 1}]; got {t_init}.")
    training = DDPMScheduler.from_config(accepted(DDPMScheduler))
    if not torch.equal(scheduler.alphas_cumprod, training.alphas_cumprod):
        raise ValueError("LCMScheduler's alphas_cumprod differ from the training DDPMScheduler's for this config.")
    if scaled_input:
        _, sigma = alpha_sigma(t_init, scheduler.alphas_cumprod, torch.zeros(()))
        scheduler.init_noise_sigma = float(sigma)
    return scheduler


def one_step_call_kwargs(t_init: int = 999, *, conditioning_scale: float = 1.0) -> dict:
    """The pipeline call settings of one student step at ``t_init`` (the student's own: see
    :func:`student_generator_input`) with the ControlNet on for that step, no CFG."""
    if isinstance(t_init, bool) or not isinstance(t_init, int) or t_init < 1 or not conditioning_scale >= 0:
        raise ValueError(
            f"t_init must be an int >= 1 and conditioning_scale >= 0; got {t_init!r}, {conditioning_scale!r}."
        )
    return {"num_inference_steps": 1, "timesteps": [int(t_init)], "guidance_scale": 1.0,
            "controlnet_conditioning_scale": float(conditioning_scale),
            "control_guidance_start": 0.0, "control_guidance_end": 1.0}  # fmt: skip


def teacher_call_kwargs(steps: int = 50, guidance_scale: float = 7.5, *, conditioning_scale: float = 1.0) -> dict:
    """The reference's call settings: ``steps`` DDIM steps with CFG ``guidance_scale``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or not guidance_scale >= 0:
        raise ValueError(f"steps must be an int >= 1 and guidance_scale >= 0; got {steps!r}, {guidance_scale!r}.")
    return {"num_inference_steps": steps, "guidance_scale": float(guidance_scale),
            "controlnet_conditioning_scale": float(conditioning_scale)}  # fmt: skip


def _controlnet_pipeline(source, controlnet, *, device, dtype):
    from diffusers import StableDiffusionControlNetPipeline

    local = Path(source).expanduser().is_dir()
    net = load_controlnet(controlnet, dtype=dtype)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(source), controlnet=net, safety_checker=None, requires_safety_checker=False, dtype=dtype,
        local_files_only=local,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def one_step_controlnet_pipeline(student_folder, controlnet, *, device="cpu", dtype: torch.dtype = torch.float32):
    """The exported student's U-Net, text encoder, VAE and tokenizer with ``controlnet`` (a
    :class:`ControlSpec`, hub id, folder or ``ControlNetModel``, moved to ``dtype``) and
    :func:`one_step_scheduler`; call it with ``one_step_call_kwargs(t_init)``."""
    folder = Path(student_folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"student_folder must be an exported pipeline folder; {folder} is not a folder.")
    t_init, scaled_input = student_generator_input(folder)
    pipe = _controlnet_pipeline(folder, controlnet, device=device, dtype=dtype)
    pipe.scheduler = one_step_scheduler(pipe.scheduler.config, t_init, scaled_input)
    return pipe


def teacher_controlnet_pipeline(teacher_source, controlnet, *, device="cpu", dtype: torch.dtype = torch.float32):
    """The teacher (hub id or folder) with ``controlnet`` and ``DDIMScheduler`` from its own scheduler
    config (SD1.5: leading spacing, steps offset 1: 50 steps run 981, 961, ..., 1); call it with
    :func:`teacher_call_kwargs`."""
    from diffusers import DDIMScheduler

    pipe = _controlnet_pipeline(teacher_source, controlnet, device=device, dtype=dtype)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


def _as_rgb_uint8(image) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"image must be a PIL image or a uint8 (H, W) / (H, W, 3) array; got {array.dtype} "
                         f"{array.shape}.")  # fmt: skip
    return np.ascontiguousarray(array)


def canny_edges(image, low: float = 100, high: float = 200) -> np.ndarray:
    """Canny edges of ``image`` (PIL or uint8 array) as a uint8 (H, W) map of 0 and 255, as ControlNet's
    canny annotator makes them: ``cv2.Canny(rgb, low, high)`` (3x3 Sobel, L1 gradient magnitude, the
    strongest channel, no smoothing). Without OpenCV, ``skimage.feature.canny`` on the luminance
    (``sigma=0``, thresholds in 8-bit units on the L2 magnitude of the same Sobel): close to, not equal
    to, OpenCV's map. Neither installed: ImportError."""
    _check_thresholds(low, high)
    array = _as_rgb_uint8(image)
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        return cv2.Canny(array, float(low), float(high))
    try:
        from skimage.feature import canny
    except ImportError:
        raise ImportError("canny_edges needs OpenCV (package opencv-python-headless) or scikit-image.") from None
    grey = array if array.ndim == 2 else np.asarray(Image.fromarray(array).convert("L"))
    # float in 8-bit units: thresholds mean the same in every release (older ones rescale integer images)
    edges = canny(grey.astype(np.float64), sigma=0.0, low_threshold=float(low), high_threshold=float(high))
    return edges.astype(np.uint8) * 255


def canny_condition(image, low: float = 100, high: float = 200) -> Image.Image:
    """The canny ControlNet's condition image: :func:`canny_edges` in all three channels."""
    edges = canny_edges(image, low, high)
    return Image.fromarray(np.repeat(edges[:, :, None], 3, axis=2))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by every offset within Euclidean distance ``radius`` (zero outside the map)."""
    height, width = mask.shape
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy or dx) and dy * dy + dx * dx <= radius * radius:
                out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] |= mask[
                    max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
                ]
    return out


def edge_f1(condition_edges, output_edges, *, tolerance: int = 0) -> float:
    """F1 of the output's edge pixels (nonzero) against the condition's. Precision: the share of output
    edges within ``tolerance`` pixels (Euclidean) of a condition edge; recall: the share of condition
    edges within ``tolerance`` of an output edge. Both maps empty: 1.0 (identical); one empty or
    precision = recall = 0: 0.0."""
    cond, out = np.asarray(condition_edges) != 0, np.asarray(output_edges) != 0
    if cond.ndim != 2 or cond.shape != out.shape:
        raise ValueError(f"edge maps must be 2-D and of one shape; got {cond.shape} and {out.shape}.")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0 (a dilation radius in pixels); got {tolerance!r}.")
    if not cond.any() and not out.any():
        return 1.0
    if not cond.any() or not out.any():
        return 0.0
    precision = (out & _dilate(cond, tolerance)).sum() / out.sum()
    recall = (cond & _dilate(out, tolerance)).sum() / cond.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


@contextlib.contextmanager
def _part_clocks(pipe, clock: dict, device: torch.device):
    """``pipe``'s text encoder and U-Net + ControlNet forwards and VAE decode, each adding its seconds
    (device synchronised around it) to ``clock[part]``; restored on exit."""
    targets = [(pipe.text_encoder, "forward", "text_encoder"), (pipe.controlnet, "forward", "denoise"),
               (pipe.unet, "forward", "denoise"), (pipe.vae, "decode", "vae_decode")]  # fmt: skip
    saved = []
    try:
        for module, name, part in targets:
            saved.append((module, name, module.__dict__.get(name)))
            original = getattr(module, name)

            def timed(*args, _original=original, _part=part, **kwargs):
                _synchronize(device)
                start = time.perf_counter()
                result = _original(*args, **kwargs)
                _synchronize(device)
                clock[_part] += time.perf_counter() - start
                return result

            setattr(module, name, timed)
        yield clock
    finally:
        for module, name, previous in reversed(saved):
            if previous is None:
                delattr(module, name)
            else:
                setattr(module, name, previous)


def timed_parts(pipe, prompt: str, image, *, seed: int = 0, call_kwargs: dict, repeats: int = REPEATS,
                warmup: int = WARMUP) -> dict:  # fmt: skip
    """Seconds per ControlNet text-to-image call at batch 1 (prompt and condition image in, PIL image
    out), split into the text encoder, the U-Net + ControlNet calls (``"denoise"``) and the VAE decode;
    each a ``dkd.metrics.timing.timing_summary`` over the ``repeats`` timed calls of
    ``dkd.metrics.timing.time_call``, whose own summary of the whole call is ``"total"`` (with its
    ``device``, ``warmup``, ``times_s``). The rest of ``total`` is the scheduler, pre- and post-processing."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be one string (batch 1); got {type(prompt).__name__}.")
    device, clock, records = pipe.device, dict.fromkeys(PARTS, 0.0), []

    def run():
        clock.update(dict.fromkeys(PARTS, 0.0))
        with torch.no_grad():
            pipe(prompt, image=image, generator=torch.Generator().manual_seed(seed), output_type="pil", **call_kwargs)
        records.append(dict(clock))

    with _part_clocks(pipe, clock, device):
        total = time_call(run, warmup=warmup, repeats=repeats, device=device, desc="timing parts")
    timed = records[warmup:]
    return {**{part: timing_summary([r[part] for r in timed]) for part in PARTS}, "total": total}


def time_saving(one_step_total: float, multi_step_total: float) -> float:
    """``1 - one / multi``: the share of the multi-step time the one-step call saves (paper: 86.26% for
    ControlNet, A40)."""
    values = (one_step_total, multi_step_total)
    finite = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not finite or one_step_total < 0 or multi_step_total <= 0:
        raise ValueError(f"times must be finite, one_step_total >= 0, multi_step_total > 0; got {values}.")
    return 1.0 - one_step_total / multi_step_total
