"""The distillation losses of DKD (paper Eq. 11 and 12) and of its baselines, as pure functions of tensors.

DMD2's layout: each loss returns ``(loss, logs)``, ``loss`` a scalar tensor to backpropagate
and ``logs`` a dict of detached 0-d tensors. No model is called here: the trainer
(``dkd.train.step``) runs the real (teacher) and fake models at ``x_t``, converts their raw outputs
with :func:`dkd.train.schedule.pred_x0`, and passes the x0 predictions in.

Eq. 11 only fixes the direction of the generator's gradient,
``w(t) (eps_real - eps_fake) dx/dlambda``, not ``w(t)`` (``docs/reference.md`` section 2);
:data:`WEIGHTINGS` names the two forms of :func:`vsd_generator_loss`:

``"dmd"`` (default; DMD2 ``compute_distribution_matching_loss``)
    ``grad = (p_real - p_fake) / mean_{C,H,W} |p_real|`` per sample, with
    ``p_real = x - x0_real`` and ``p_fake = x - x0_fake``; so ``grad = (x0_fake - x0_real) / n_b``
    where ``n_b = mean |x - x0_real|`` over sample b. In eps terms
    ``x0_fake - x0_real = (sigma_t / alpha_t) (eps_real - eps_fake)``, i.e.
    ``w(t) = sigma_t / (alpha_t n_b)``.
``"sds"`` (SwiftBrush ``train_swiftbrush.py``; threestudio's VSD guidance uses the same ``w(t) = 1 - abar_t``)
    ``grad = sigma_t^2 (eps_real - eps_fake) = alpha_t sigma_t (x0_fake - x0_real)``,
    with ``sigma_t^2 = 1 - abar_t`` and ``alpha_t = sqrt(abar_t)``. As in SwiftBrush (and SDS /
    VSD in general) the factor ``dx_t/dx = alpha_t`` of the chain rule is not applied: ``w(t)``
    multiplies the eps difference directly. (SwiftBrush also guides its fake model: that is the
    trainer's ``fake_guidance_scale``, ``dkd.train.objective``.)

Both use the "detached target" trick: ``loss = 0.5 * mean((x - sg(x - grad))^2)``, so that
``d loss / d x = grad / x.numel()`` exactly, and one gradient-descent step moves ``x`` toward
the real model's x0 prediction and away from the fake model's.

:func:`sid_generator_loss` (SiD-LSG) is no detached target: its gradient flows through ``x`` and
through both models' predictions, which the trainer computes with their graphs kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .schedule import alpha_sigma

WEIGHTINGS = ("dmd", "sds")


def cfg(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``uncond + scale (cond - uncond)`` (diffusers' convention, as in DMD2).

    The paper guides the real model with scale 1.5 and the fake model not at all.
    """
    return uncond + scale * (cond - uncond)


def _loss_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 at least (DMD2 and SwiftBrush take the MSE in float32), float64 for float64 input."""
    return torch.promote_types(x.dtype, torch.float32)


def _detached_target_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean((x - sg(x - grad))^2)``, whose gradient w.r.t. ``x`` is ``grad / x.numel()``."""
    dtype = _loss_dtype(x)
    target = (x.detach().double() - grad).to(dtype)
    return 0.5 * F.mse_loss(x.to(dtype), target, reduction="mean")


def _finite(grad: torch.Tensor) -> torch.Tensor:
    """``nan_to_num`` with NaN and +-inf mapped to 0 (a sample with a 0/0 or x/0 gets no gradient)."""
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def dmd_gradient(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DMD2's normalised score difference, in float64: ``(grad, normaliser)``.

    ``grad = (p_real - p_fake) / mean_{C,H,W} |p_real|`` per sample, ``p_real = x - x0_real``,
    ``p_fake = x - x0_fake``; ``normaliser`` has shape ``(B, 1, ..., 1)``. Where the normaliser
    is 0 (the real model reproduces ``x`` exactly) the sample's gradient is 0; DMD2's bare
    ``nan_to_num`` would map ``x/0`` to the largest float instead and make the loss infinite.
    """
    x, x0_real, x0_fake = x.detach().double(), x0_real.detach().double(), x0_fake.detach().double()
    p_real, p_fake = x - x0_real, x - x0_fake
    normaliser = p_real.abs().mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return _finite((p_real - p_fake) / normaliser), normaliser


def sds_gradient(
    x0_real: torch.Tensor, x0_fake: torch.Tensor, t: torch.Tensor | int, alphas_cumprod: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SwiftBrush's ``sigma_t^2 (eps_real - eps_fake)``, in float64: ``(grad, sigma_t^2)``.

    Computed from the x0 predictions at the same ``x_t``: ``eps = (x_t - alpha_t x0) / sigma_t``
    gives ``eps_real - eps_fake = (alpha_t / sigma_t) (x0_fake - x0_real)``, hence
    ``grad = alpha_t sigma_t (x0_fake - x0_real)`` (no ``x_t`` needed, and the same call works
    for eps and v models once their outputs are converted with ``pred_x0``).
    """
    x0_real, x0_fake = x0_real.detach().double(), x0_fake.detach().double()
    alpha, sigma = alpha_sigma(t, alphas_cumprod, x0_real)
    return _finite(alpha * sigma * (x0_fake - x0_real)), sigma**2


def vsd_generator_loss(
    x: torch.Tensor,
    x0_real: torch.Tensor,
    x0_fake: torch.Tensor,
    t: torch.Tensor | int,
    alphas_cumprod: torch.Tensor,
    *,
    weighting: str = "dmd",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator loss of Eq. 11 (Algorithm 1, line 8) with the weighting ``w(t)`` named.

    ``x`` is the generator's output x0 (with its autograd graph); ``x0_real`` (teacher, CFG
    applied) and ``x0_fake`` are the two models' x0 predictions at ``x_t = add_noise(x, eps, t)``
    (detached inside). ``t`` holds the timesteps used for ``x_t`` (used by ``"sds"`` only).

    The loss is ``0.5 * mean((x - sg(x - grad))^2)`` and its gradient w.r.t. ``x`` is, with
    ``N = x.numel()`` (the mean reduction):

    * ``"dmd"``: ``d loss / d x = (x0_fake - x0_real) / (N * mean_{C,H,W} |x - x0_real|)``
      = ``(p_real - p_fake) / normaliser / N``;
    * ``"sds"``: ``d loss / d x = (1 - abar_t) (eps_real - eps_fake) / N``
      = ``sqrt(abar_t) sqrt(1 - abar_t) (x0_fake - x0_real) / N``.

    Returns ``(loss, logs)``; logs: ``loss_vsd``, ``grad_norm`` (of ``grad``, as DMD2 logs it),
    ``grad_abs_mean``, and ``normaliser_mean`` / ``normaliser_min`` ("dmd") or ``w_mean``
    ("sds", the mean ``sigma_t^2``). Logged values are detached 0-d tensors, as in DMD2: reading
    them (``float``) waits for the GPU, so the training loop does it only when it writes a log row.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    if not x.shape == x0_real.shape == x0_fake.shape:
        raise ValueError(
            f"x, x0_real and x0_fake must have one shape, got {tuple(x.shape)}, "
            f"{tuple(x0_real.shape)}, {tuple(x0_fake.shape)}"
        )
    if weighting == "dmd":
        grad, normaliser = dmd_gradient(x, x0_real, x0_fake)
        extra = {"normaliser_mean": normaliser.mean(), "normaliser_min": normaliser.min()}
    else:
        grad, w = sds_gradient(x0_real, x0_fake, t, alphas_cumprod)
        extra = {"w_mean": w.mean()}
    loss = _detached_target_loss(x, grad)
    logs = {
        "loss_vsd": loss.detach(),
        "grad_norm": grad.norm(),
        "grad_abs_mean": grad.abs().mean(),
        **{k: v.detach() for k, v in extra.items()},
    }
    return loss, logs


def sid_generator_loss(
    x: torch.Tensor,
    x0_real: torch.Tensor,
    x0_fake: torch.Tensor,
    *,
    alpha: float = 1.0,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SiD's generator loss (mingyuanzhou/SiD-LSG ``sid_training_loop.py``; Zhou et al. 2024):

    ``L = (1/B) sum_b w_b sum_{C,H,W} (y_r - y_f) * ((y_r - x) - alpha (y_r - y_f))``
    ``  = (1/B) sum_b w_b [(1 - alpha) |y_r - y_f|^2 + (y_r - y_f) . (y_f - x)]``,

    ``x`` the generator's sample, ``y_r = x0_real`` and ``y_f = x0_fake`` the two models' x0
    predictions at ``x_t = alpha_t x + sigma_t eps``, all three with their graphs (the gradient flows
    through both models into ``x``). ``w_b = 1 / max(mean_{C,H,W} |x - y_r|, 1e-5)``, detached, as
    DMD2 normalises; pass ``weight`` (shape ``(B, 1, ..., 1)``) to fix it instead. Computed in float32
    at least. Returns ``(loss, logs)``; logs ``loss_sid``, ``score_diff`` (mean ``|y_r - y_f|``) and
    ``weight_mean``.
    """
    if not x.shape == x0_real.shape == x0_fake.shape:
        raise ValueError(
            f"x, x0_real and x0_fake must have one shape, got {tuple(x.shape)}, "
            f"{tuple(x0_real.shape)}, {tuple(x0_fake.shape)}"
        )
    dtype = _loss_dtype(x)
    x, y_r, y_f = x.to(dtype), x0_real.to(dtype), x0_fake.to(dtype)
    dims = tuple(range(1, x.ndim))
    if weight is None:
        weight = 1.0 / (x - y_r).detach().abs().mean(dim=dims, keepdim=True).clamp(min=1e-5)
    per_sample = ((y_r - y_f) * ((y_r - x) - alpha * (y_r - y_f)) * weight).sum(dim=dims)
    loss = per_sample.mean()
    logs = {
        "loss_sid": loss.detach(),
        "score_diff": (y_r - y_f).detach().abs().mean(),
        "weight_mean": weight.detach().mean(),
    }
    return loss, logs


def fake_denoising_loss(
    model_output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The fake model's denoising loss (Eq. 12; Algorithm 1, line 11): ``mean(weight (output - target)^2)``.

    ``target`` is ``eps`` (or ``v`` for v models) from :func:`dkd.train.schedule.denoising_target`
    on the detached generator sample; ``weight`` broadcasts over the samples (e.g. ``abar_t``,
    shape ``(B, 1, ..., 1)``: SwiftBrush's ``mean((alpha_t out - alpha_t eps)^2)``), 1 if None.
    The MSE is taken in float32 at least, as DMD2 does. Returns ``(loss, {"loss_fake": detached 0-d tensor})``.
    """
    if model_output.shape != target.shape:
        raise ValueError(
            f"model_output and target must have one shape, got {tuple(model_output.shape)}, {tuple(target.shape)}"
        )
    dtype = _loss_dtype(model_output)
    output, target = model_output.to(dtype), target.detach().to(dtype)
    if weight is None:
        loss = F.mse_loss(output, target, reduction="mean")
    else:
        loss = (weight.to(dtype) * (output - target).square()).mean()
    return loss, {"loss_fake": loss.detach()}


def clamped_score_loss(score: torch.Tensor, margin: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SwiftBrush v2's clamped CLIP loss (Dao et al. 2024, Eq. 5): ``mean(max(0, margin - score))`` over the
    samples, ``score`` an image-text score per sample (``dkd.train.scorers``: CLIP's cosine; the toy's
    digit probability). Zero, and no gradient, for samples scoring above ``margin``; below it, the
    gradient w.r.t. each score is ``-1 / B``. Returns ``(loss, logs)``: ``loss_clip``, ``clip_score``
    (the mean score) and ``clip_active`` (the share of samples below the margin)."""
    if score.ndim != 1:
        raise ValueError(f"score must hold one value per sample (shape (B,)); got {tuple(score.shape)}")
    gap = margin - score.to(_loss_dtype(score))
    loss = gap.clamp(min=0).mean()
    logs = {"loss_clip": loss.detach(), "clip_score": score.detach().mean(), "clip_active": (gap > 0).float().mean()}
    return loss, logs
