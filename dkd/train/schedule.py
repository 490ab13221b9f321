"""The noise schedule of the teacher as pure functions of tensors (paper Algorithm 1, lines 5-7).

Everything reads a diffusers scheduler's ``alphas_cumprod`` (``abar``; SD: DDPM/DDIM,
``scaled_linear`` betas 0.00085..0.012, 1000 steps) and writes ``alpha_t = sqrt(abar_t)``,
``sigma_t = sqrt(1 - abar_t)``, so that ``x_t = alpha_t x0 + sigma_t eps`` (Algorithm 1, line 7).

``t`` is an integer tensor of shape ``(B,)`` (one timestep per sample, broadcast over the
other dims) or a scalar (one timestep for the whole batch). The conversions run in float64, as
DMD2 does (``get_x0_from_noise`` on ``.double()`` inputs), and return the promoted dtype of
their tensor inputs unless ``dtype`` says otherwise (pass ``dtype=torch.float64`` to keep
DMD2's float64 x0 predictions).
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")


def alpha_sigma(
    t: torch.Tensor | int, alphas_cumprod: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t) = (sqrt(abar_t), sqrt(1 - abar_t))`` in float64 on ``like``'s device.

    Shaped ``(B, 1, ..., 1)`` to broadcast over ``like`` (0-d for a scalar ``t``).
    """
    t = torch.as_tensor(t, device=like.device)
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"timesteps must be integers (indices into alphas_cumprod), got dtype {t.dtype}")
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != like.shape[0]):
        raise ValueError(f"t must be a scalar or have shape ({like.shape[0]},) (one per sample), got {tuple(t.shape)}")
    abar = alphas_cumprod.to(device=like.device, dtype=torch.float64)[t.long()]
    if abar.ndim == 1:
        abar = abar.reshape(-1, *([1] * (like.ndim - 1)))
    return abar.sqrt(), (1.0 - abar).sqrt()


def _out_dtype(*tensors: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    out = tensors[0].dtype
    for tensor in tensors[1:]:
        out = torch.promote_types(out, tensor.dtype)
    return out


def add_noise(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (Algorithm 1, line 7; diffusers ``add_noise``).

    Differentiable in ``x0`` (the generator's gradient path, if the trainer wants it).
    """
    alpha, sigma = alpha_sigma(t, alphas_cumprod, x0)
    return (alpha * x0.double() + sigma * noise.double()).to(_out_dtype(x0, noise, dtype=None))


def pred_x0_from_eps(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor | int,
    alphas_cumprod: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (DMD2 ``get_x0_from_noise``)."""
    alpha, sigma = alpha_sigma(t, alphas_cumprod, x_t)
    return ((x_t.double() - sigma * eps.double()) / alpha).to(_out_dtype(x_t, eps, dtype=dtype))


def pred_x0_from_v(
    x_t: torch.Tensor,
    v: torch.Tensor,
    t: torch.Tensor | int,
    alphas_cumprod: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v`` for ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0``.

    (Salimans & Ho's v-parameterisation, diffusers ``get_velocity``; SD2.1-768 is a v model.)
    """
    alpha, sigma = alpha_sigma(t, alphas_cumprod, x_t)
    return (alpha * x_t.double() - sigma * v.double()).to(_out_dtype(x_t, v, dtype=dtype))


def pred_x0(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    t: torch.Tensor | int,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The model's x0 prediction from its raw output; ``prediction_type`` is ``"epsilon"`` or ``"v_prediction"``."""
    _check_prediction_type(prediction_type)
    convert = pred_x0_from_eps if prediction_type == "epsilon" else pred_x0_from_v
    return convert(x_t, model_output, t, alphas_cumprod, dtype=dtype)


def pred_eps(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    t: torch.Tensor | int,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The model's eps prediction from its raw output (identity for eps models).

    For a v model: ``eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v``.
    """
    _check_prediction_type(prediction_type)
    out_dtype = _out_dtype(x_t, model_output, dtype=dtype)
    if prediction_type == "epsilon":
        return model_output.to(out_dtype)
    alpha, sigma = alpha_sigma(t, alphas_cumprod, x_t)
    return (sigma * x_t.double() + alpha * model_output.double()).to(out_dtype)


def one_step_x0(
    noise: torch.Tensor,
    model_output: torch.Tensor,
    t_init: int,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The one-step generator's sample: x0 read off pure noise at ``t_init`` (Algorithm 1, line 5).

    The generator U-Net is called on ``z ~ N(0, I)`` with timestep ``t_init`` (999 in the paper,
    DMD2 and SwiftBrush); its output is turned into ``x0`` as if ``z`` were ``x_{t_init}``:
    ``x0 = (z - sqrt(1 - abar_999) eps_hat) / sqrt(abar_999)`` for eps models
    (``docs/reference.md`` section 2). Differentiable in ``model_output``.
    """
    if not 0 <= int(t_init) < alphas_cumprod.shape[0]:
        raise ValueError(f"t_init must be in [0, {alphas_cumprod.shape[0] - 1}], got {t_init}")
    return pred_x0(noise, model_output, int(t_init), alphas_cumprod, prediction_type, dtype=dtype)


def denoising_target(
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor | int,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """The regression target of the denoising loss (Eq. 1 / Eq. 12): ``eps``, or ``v`` for v models.

    ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (diffusers ``get_velocity``). Computed in
    float64, returned in the promoted dtype of ``x0`` and ``noise``.
    """
    _check_prediction_type(prediction_type)
    out_dtype = _out_dtype(x0, noise, dtype=None)
    if prediction_type == "epsilon":
        return noise.to(out_dtype)
    alpha, sigma = alpha_sigma(t, alphas_cumprod, x0)
    return (alpha * noise.double() - sigma * x0.double()).to(out_dtype)


def timestep_range(low_frac: float, high_frac: float, num_train_timesteps: int) -> tuple[int, int]:
    """The inclusive integer range ``[int(low_frac T), min(int(high_frac T), T - 1)]``."""
    if not 0.0 <= low_frac <= high_frac <= 1.0:
        raise ValueError(f"need 0 <= low_frac <= high_frac <= 1, got low_frac={low_frac}, high_frac={high_frac}")
    low, high = int(low_frac * num_train_timesteps), min(int(high_frac * num_train_timesteps), num_train_timesteps - 1)
    return low, high


def sample_timesteps(
    batch: int,
    low_frac: float = 0.02,
    high_frac: float = 0.98,
    num_train_timesteps: int = 1000,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``t ~ U{int(0.02 T), ..., int(0.98 T)}``, both ends INCLUDED: ``[20, 980]`` for ``T = 1000``.

    Algorithm 1, lines 6 and 9 (``t ~ U(0.02 T_max, 0.98 T_max)``). The inclusive upper end is
    DMD2's (``randint(min_step, min(max_step + 1, T))``) and SwiftBrush's (``randint(20, 981)``).
    The upper end is capped at ``T - 1``, so ``low_frac=0, high_frac=1`` gives DMD2's fake-model
    range ``randint(0, 1000)``. Returns int64 of shape ``(batch,)``.
    """
    low, high = timestep_range(low_frac, high_frac, num_train_timesteps)
    return torch.randint(low, high + 1, (batch,), generator=generator, device=device, dtype=torch.long)
