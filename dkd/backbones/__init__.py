"""Backbones: the teachers (SD1.5, SD2.1, PixArt-alpha-256, tiny ones) and their parts."""

from .load import BackboneNotFoundError, components_source, load_denoiser, load_teacher, resolve_source
from .specs import BACKBONES, BackboneSpec, backbone_spec, build_denoiser, config_dir
from .teacher import Teacher, denoise
from .text import PromptEmbeds, encode_prompts

__all__ = [
    "BACKBONES",
    "BackboneNotFoundError",
    "components_source",
    "BackboneSpec",
    "PromptEmbeds",
    "Teacher",
    "backbone_spec",
    "build_denoiser",
    "config_dir",
    "denoise",
    "encode_prompts",
    "load_denoiser",
    "load_teacher",
    "resolve_source",
]
