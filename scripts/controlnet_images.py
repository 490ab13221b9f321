"""Rule `controlnet_images`: one model (teacher: DDIM with CFG; student: one step) with a control's
ControlNet on its condition: every prompt with every seed, then seconds per image at batch 1 split into
text encoder, U-Net + ControlNet and VAE (dkd.downstream.controlnet.pipeline.timed_parts; first prompt and seed)."""

import json
import logging

import diffusers
import torch
from PIL import Image

from dkd.downstream.controlnet.pipeline import timed_parts
from dkd.downstream.controlnet.run import TargetControl, TargetSettings, controlnet_pipeline, generate_images
from dkd.io import atomic_folder, atomic_write_text, rule_log

sm = snakemake  # noqa: F821
with rule_log(sm.log[0], sm.threads, gpus=sm.resources.get("gpus", 0)):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, sm.params.dtype) if device == "cuda" else torch.float32
    control = TargetControl.from_config(sm.wildcards.control, sm.params.control)
    settings = TargetSettings.from_config(sm.params.settings)
    kind, model = control.spec.kind, sm.wildcards.model
    pipe, call = controlnet_pipeline(model, sm.params.source, control, settings, device=device, dtype=dtype)
    with Image.open(sm.input.condition) as image:
        condition = image.convert("RGB")
    with atomic_folder(sm.output.images) as folder:
        records = generate_images(pipe, control.prompts, settings.seeds, condition, folder, call)
    about = {"control": kind, "model": model, "call": call, "dtype": str(dtype), "diffusers": diffusers.__version__}
    record = {**about, "source": str(sm.params.source), "controlnet": control.spec.controlnet, "folder": "images"}
    atomic_write_text(sm.output.marker, json.dumps({**record, "images": records}, indent=2))
    logging.info("%s/%s: %d images", kind, model, len(records))
    prompt, seed = control.prompts[0], settings.seeds[0]
    parts = timed_parts(pipe, prompt, condition, seed=seed, call_kwargs=call, repeats=settings.repeats,
                        warmup=settings.warmup)  # fmt: skip
    timing = {**about, "nfe": call["num_inference_steps"], "prompt": prompt, "seed": seed, "parts": parts}
    atomic_write_text(sm.output.timing, json.dumps(timing, indent=2))
    logging.info("%s/%s: total %.4f s per image", kind, model, parts["total"]["median_s"])
