"""DKD distillation (paper section 3.3, Algorithm 1): noise-schedule helpers and losses."""

from .losses import (
    WEIGHTINGS,
    cfg,
    dmd_gradient,
    fake_denoising_loss,
    sds_gradient,
    sid_generator_loss,
    vsd_generator_loss,
)
from .objective import OBJECTIVES, ObjectiveConfig
from .schedule import (
    PREDICTION_TYPES,
    add_noise,
    alpha_sigma,
    denoising_target,
    one_step_x0,
    pred_eps,
    pred_x0,
    pred_x0_from_eps,
    pred_x0_from_v,
    sample_timesteps,
    timestep_range,
)
from .step import fake_loss, generate, generator_loss

__all__ = [
    "OBJECTIVES",
    "ObjectiveConfig",
    "fake_loss",
    "generate",
    "generator_loss",
    "PREDICTION_TYPES",
    "WEIGHTINGS",
    "add_noise",
    "alpha_sigma",
    "cfg",
    "denoising_target",
    "dmd_gradient",
    "fake_denoising_loss",
    "one_step_x0",
    "pred_eps",
    "pred_x0",
    "pred_x0_from_eps",
    "pred_x0_from_v",
    "sample_timesteps",
    "sds_gradient",
    "timestep_range",
    "vsd_generator_loss",
    "sid_generator_loss",
]
