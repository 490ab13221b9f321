"""Backbones: the teachers' denoisers and their parts (SD1.5, SD2.1, PixArt-alpha-256)."""

from .specs import BACKBONES, BackboneSpec, backbone_spec, build_denoiser, config_dir

__all__ = ["BACKBONES", "BackboneSpec", "backbone_spec", "build_denoiser", "config_dir"]
