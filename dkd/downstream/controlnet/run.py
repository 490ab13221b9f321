"""The ``controlnet`` workflow target (paper 4.3 and F.2, Figs. 5 and 22): settings, condition images,
the tiny ControlNet, the image sets and their canny F1.

Each control of the target (config ``downstream.controlnet.controls``, keyed by kind: canny, depth,
openpose) names its ControlNet (a hub id, a folder, or ``tiny``: :func:`tiny_controlnet`), its source
image (a path, ``hf://<owner>/<repo>/<path in the repo>``, or ``tiny``: :func:`draw_source`), the
annotator that turns it into the condition (``canny``: :func:`dkd.downstream.controlnet.pipeline.canny_condition`;
``none``: the image already is the condition, e.g. a depth map or pose skeleton) and its prompts. Both
models, the SD teacher (DDIM, CFG) and the one-step student (one call at its ``t_init``, no CFG), get
the same condition, prompts and seeds (:func:`controlnet_pipeline`, :func:`generate_images`); a canny
control's images are scored by the F1 of their canny edges against the condition's
(:func:`canny_f1_scores`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ...data.hub import HUB_SCHEME
from ...io import atomic_open
from .pipeline import (
    ControlSpec,
    canny_condition,
    canny_edges,
    edge_f1,
    one_step_call_kwargs,
    one_step_controlnet_pipeline,
    student_generator_input,
    teacher_call_kwargs,
    teacher_controlnet_pipeline,
)

ANNOTATORS = ("canny", "none")
MODELS = ("teacher", "student")
TINY = "tiny"  # a ControlNet / source image built in code (rule tiny_controlnet)


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")


@dataclass(frozen=True)
class TargetControl:
    """One control: its :class:`ControlSpec` (ControlNet, revision, scale, canny thresholds), the source
    ``image``, the ``annotator`` (canny | none) and the ``prompts``."""

    spec: ControlSpec
    image: str
    annotator: str = "canny"
    prompts: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.image, str) or not self.image:
            raise ValueError(f"{self.spec.kind}: image must be a path, hf://<owner>/<repo>/<path> or tiny.")
        if self.image.startswith(HUB_SCHEME):
            split_hub_file(self.image)
        if self.annotator not in ANNOTATORS:
            raise ValueError(f"{self.spec.kind}: annotator must be one of {ANNOTATORS}; got {self.annotator!r}.")
        prompts = (self.prompts,) if isinstance(self.prompts, str) else tuple(self.prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"{self.spec.kind}: prompts must be a non-empty list of non-empty strings.")
        object.__setattr__(self, "prompts", prompts)

    @classmethod
    def from_config(cls, kind: str, settings: Mapping) -> TargetControl:
        """From a control's config block (``controlnet``, ``revision``, ``image``, ``annotator``,
        ``low``, ``high``, ``conditioning_scale``, ``prompts``)."""
        known = {"controlnet", "revision", "image", "annotator", "low", "high", "conditioning_scale", "prompts"}
        if unknown := set(settings) - known:
            raise ValueError(f"{kind}: unknown control settings {sorted(unknown)}; known: {sorted(known)}.")
        spec = ControlSpec(
            kind,
            controlnet=settings.get("controlnet"),
            revision=settings.get("revision"),
            conditioning_scale=settings.get("conditioning_scale", 1.0),
            canny_thresholds=(settings.get("low", 100), settings.get("high", 200)),
        )
        return cls(spec, settings.get("image", ""), settings.get("annotator", "canny"), settings.get("prompts", ()))


@dataclass(frozen=True)
class TargetSettings:
    """The target's shared settings: ``seeds`` (a count N: 0 .. N-1, or a list), the square
    ``resolution``, the teacher's DDIM ``steps`` and ``guidance_scale``, the timing ``warmup`` and
    ``repeats`` (batch 1), and the canny F1's ``f1_tolerance`` (pixels; 0: exact pixels)."""

    seeds: tuple[int, ...] = (0, 1)
    resolution: int = 512
    steps: int = 50
    guidance_scale: float = 7.5
    warmup: int = 3
    repeats: int = 20
    f1_tolerance: int = 0

    def __post_init__(self):
        seeds = tuple(range(self.seeds)) if isinstance(self.seeds, int) and not isinstance(self.seeds, bool) else None
        seeds = seeds if seeds is not None else tuple(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise ValueError(f"seeds must be a count >= 1 or a list of distinct integers >= 0; got {self.seeds!r}.")
        object.__setattr__(self, "seeds", seeds)
        for name in ("resolution", "steps", "repeats"):
            _positive_int(name, getattr(self, name))
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8; got {self.resolution}.")
        scale = self.guidance_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0; got {scale!r}.")
        for name in ("warmup", "f1_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {value!r}.")

    @classmethod
    def from_config(cls, settings: Mapping) -> TargetSettings:
        """From the target's config block (``seeds``, ``resolution``, ``teacher: {steps,
        guidance_scale}``, ``timing: {warmup, repeats}``, ``f1_tolerance``; other keys are ignored)."""
        teacher, timing = dict(settings.get("teacher") or {}), dict(settings.get("timing") or {})
        keys = ("seeds", "resolution", "f1_tolerance")
        return cls(**{k: settings[k] for k in keys if k in settings}, **teacher, **timing)


def split_hub_file(spec: str) -> tuple[str, str]:
    """``hf://<owner>/<repo>/<path>`` -> (``owner/repo``, ``path``)."""
    parts = spec.removeprefix(HUB_SCHEME).split("/", 2)
    if not spec.startswith(HUB_SCHEME) or len(parts) != 3 or not all(parts):
        raise ValueError(f"{spec!r}: a hub file is hf://<owner>/<repo>/<path in the repo>.")
    return "/".join(parts[:2]), parts[2]


def _on_hub(source: str) -> bool:
    return source != TINY and not Path(source).expanduser().exists()


def controlnet_files(source: str, revision: str | None = None, image: str | None = None) -> list:
    """The hub files a control loads (``dkd.fetch``'s ``controlnet``): the ControlNet's model folder at
    ``revision`` (a hub id), and the source ``image`` when it is ``hf://`` (at ``revision`` when it lies
    in the ControlNet's own repo, else at main)."""
    from ...fetch import ModelFiles

    files = [ModelFiles("model_folder", source, revision=revision)] if _on_hub(source) else []
    if image and image.startswith(HUB_SCHEME):
        repo, path = split_hub_file(image)
        files.append(ModelFiles("hub_file", repo, filename=path, revision=revision if repo == source else None))
    return files


def load_source_image(image: str, revision: str | None = None, controlnet: str | None = None) -> Image.Image:
    """The source image (RGB) from a path or ``hf://`` (the cache only when HF_HUB_OFFLINE is set)."""
    if image.startswith(HUB_SCHEME):
        from ...analysis.io import hub_file

        repo, path = split_hub_file(image)
        image = str(hub_file(repo, path, revision if repo == controlnet else None))
    with Image.open(image) as opened:
        return opened.convert("RGB")


def square(image: Image.Image, resolution: int) -> Image.Image:
    """``image`` centre-cropped to a square and resized (Lanczos) to ``resolution`` x ``resolution``."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)


def make_condition(image: Image.Image, control: TargetControl, resolution: int) -> Image.Image:
    """The condition image of ``control``: the source squared to ``resolution``, then its annotator."""
    squared = square(image.convert("RGB"), resolution)
    if control.annotator == "canny":
        return canny_condition(squared, *control.spec.canny_thresholds)
    return squared


def draw_source(resolution: int, seed: int = 0) -> Image.Image:
    """A synthetic source picture (the tiny config's): a grey background with four filled rectangles
    and ellipses of random colours and places, drawn with ``seed``; its canny edges are their outlines."""
    _positive_int("resolution", resolution)
    rng = np.random.default_rng(seed)
    picture = Image.new("RGB", (resolution, resolution), (128, 128, 128))
    draw = ImageDraw.Draw(picture)
    for k in range(4):
        x0, y0 = rng.integers(0, resolution // 2, size=2)
        x1, y1 = x0 + rng.integers(resolution // 4, resolution // 2, size=2)
        colour = tuple(int(c) for c in rng.choice([0, 255], size=3))
        (draw.rectangle if k % 2 == 0 else draw.ellipse)([int(x0), int(y0), int(x1), int(y1)], fill=colour)
    return picture


def tiny_controlnet(teacher_folder: str | Path, *, seed: int = 0, scale: float = 0.3):
    """A ControlNet of the tiny SD teacher (``ControlNetModel.from_unet``: its encoder copied), with
    one stride-2 step in the condition embedding per VAE downsampling (the tiny VAE: one) and its
    zero-initialised convolutions (the condition embedding's last, the down and mid blocks' outputs)
    set to ``scale`` x N(0, 1) drawn with ``seed``, so that the condition changes the image."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    folder = Path(teacher_folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    downsamplings = len(AutoencoderKL.load_config(folder / "vae")["block_out_channels"]) - 1
    channels = tuple(16 * 2**i for i in range(downsamplings + 1))
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    generator = torch.Generator().manual_seed(seed)
    zero_convs = ("controlnet_cond_embedding.conv_out", "controlnet_down_blocks", "controlnet_mid_block")
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(zero_convs):
                param.copy_(scale * torch.randn(param.shape, generator=generator))
    return net.eval()


def controlnet_pipeline(model: str, source, control: TargetControl, settings: TargetSettings, *, device, dtype):
    """``(pipe, call_kwargs)`` of ``model``: ``teacher`` (``source``: the SD teacher; DDIM ``steps``, CFG
    ``guidance_scale``) or ``student`` (``source``: the exported student folder; one call at its
    ``t_init``, no CFG), each with ``control``'s ControlNet at its conditioning scale."""
    scale = control.spec.conditioning_scale
    if model == "teacher":
        pipe = teacher_controlnet_pipeline(source, control.spec, device=device, dtype=dtype)
        return pipe, teacher_call_kwargs(settings.steps, settings.guidance_scale, conditioning_scale=scale)
    if model == "student":
        pipe = one_step_controlnet_pipeline(source, control.spec, device=device, dtype=dtype)
        return pipe, one_step_call_kwargs(student_generator_input(source)[0], conditioning_scale=scale)
    raise ValueError(f"model must be one of {MODELS}; got {model!r}.")


def image_name(prompt_index: int, seed: int) -> str:
    """The file of prompt ``prompt_index`` with ``seed``."""
    return f"p{prompt_index:03d}-s{seed}.png"


def generate_images(pipe, prompts: Sequence[str], seeds: Sequence[int], condition: Image.Image, folder,
                    call_kwargs: dict) -> list[dict]:  # fmt: skip
    """Every prompt with every seed (one call per prompt, the seeds as its batch, a CPU generator per
    seed: the same starting noise for every model), written as PNGs into ``folder``; one record
    ``{file, prompt, seed}`` per image."""
    folder, records = Path(folder), []
    folder.mkdir(parents=True, exist_ok=True)
    for i, prompt in enumerate(tqdm(prompts, desc="prompts", unit="prompt")):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        with torch.no_grad():
            images = pipe([prompt] * len(seeds), image=[condition] * len(seeds), generator=generators,
                          output_type="pil", **call_kwargs).images  # fmt: skip
        for seed, image in zip(seeds, images):
            with atomic_open(folder / image_name(i, seed), "wb") as handle:
                image.save(handle, format="PNG")
            records.append({"file": image_name(i, seed), "prompt": prompt, "seed": seed})
    return records


def read_edges(path) -> np.ndarray:
    """A condition edge map (PNG, edges nonzero) as a boolean (H, W) array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) != 0


def canny_f1_scores(condition, images: Sequence, thresholds=(100, 200), tolerance: int = 0) -> dict:
    """``{"per_image": [F1, ...], "mean": ...}``: :func:`edge_f1` of each image's canny edges (the
    control's ``thresholds``) against the ``condition`` edge map (a path), within ``tolerance`` pixels."""
    edges = read_edges(condition)
    scores = []
    for path in images:
        with Image.open(path) as image:
            scores.append(edge_f1(edges, canny_edges(image.convert("RGB"), *thresholds), tolerance=tolerance))
    if not scores:
        raise ValueError("canny_f1_scores needs at least one image.")
    return {"per_image": scores, "mean": float(np.mean(scores)), "tolerance": tolerance,
            "thresholds": list(thresholds)}  # fmt: skip


def read_images(marker) -> tuple[Path, list[dict]]:
    """The images folder and records of an ``images.json`` written by the images rule."""
    data = json.loads(Path(marker).read_text())
    return Path(marker).parent / data["folder"], data["images"]
