"""The distillation losses and schedule helpers against hand-written references.

References: diffusers' own schedulers (``add_noise``, ``get_velocity``, DDIM's
``pred_original_sample``) and the closed forms written out in each test, all in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from dkd.train import (
    add_noise,
    cfg,
    denoising_target,
    fake_denoising_loss,
    one_step_x0,
    pred_eps,
    pred_x0,
    sample_timesteps,
    vsd_generator_loss,
)

SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
TIGHT = dict(rtol=0.0, atol=1e-12)
SHAPE = (4, 4, 8, 8)


@pytest.fixture(scope="module")
def abar() -> torch.Tensor:
    return DDPMScheduler(**SD_SCHEDULE).alphas_cumprod


def _tensors(*shapes, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype) for shape in shapes]


def _by_hand(abar, t, ndim=4):
    """sqrt(abar_t), sqrt(1 - abar_t) per sample, written out without the module's helpers."""
    a = abar.double()[t].reshape(-1, *([1] * (ndim - 1)))
    return a.sqrt(), (1 - a).sqrt()


T = torch.tensor([20, 300, 700, 980])


def test_add_noise_matches_diffusers_and_formula(abar):
    x0, eps = _tensors(SHAPE, SHAPE)
    alpha, sigma = _by_hand(abar, T)
    torch.testing.assert_close(add_noise(x0, eps, T, abar), alpha * x0 + sigma * eps, **TIGHT)
    torch.testing.assert_close(add_noise(x0, eps, T, abar), DDPMScheduler(**SD_SCHEDULE).add_noise(x0, eps, T), **TIGHT)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_pred_x0_inverts_add_noise(abar, prediction_type):
    x0, eps = _tensors(SHAPE, SHAPE, seed=1)
    x_t = add_noise(x0, eps, T, abar)
    output = denoising_target(x0, eps, T, abar, prediction_type)
    torch.testing.assert_close(pred_x0(x_t, output, T, abar, prediction_type), x0, **TIGHT)
    torch.testing.assert_close(pred_eps(x_t, output, T, abar, prediction_type), eps, **TIGHT)


def test_v_target_by_hand_and_diffusers(abar):
    x0, eps = _tensors(SHAPE, SHAPE, seed=2)
    alpha, sigma = _by_hand(abar, T)
    v = denoising_target(x0, eps, T, abar, "v_prediction")
    torch.testing.assert_close(v, alpha * eps - sigma * x0, **TIGHT)
    torch.testing.assert_close(v, DDPMScheduler(**SD_SCHEDULE).get_velocity(x0, eps, T), **TIGHT)
    torch.testing.assert_close(denoising_target(x0, eps, T, abar, "epsilon"), eps, rtol=0, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_pred_x0_matches_ddim_step(abar, prediction_type):
    ddim = DDIMScheduler(**SD_SCHEDULE, clip_sample=False, prediction_type=prediction_type)
    ddim.set_timesteps(50)
    x_t, output = _tensors(SHAPE, SHAPE, seed=3)
    t = int(ddim.timesteps[10])
    expected = ddim.step(output, t, x_t).pred_original_sample
    # DDIM takes sqrt(abar_t) of a float32 scalar: agreement to float32 precision only.
    torch.testing.assert_close(pred_x0(x_t, output, t, abar, prediction_type), expected, rtol=1e-5, atol=1e-6)


def test_conversions_run_in_float64_and_return_input_dtype(abar):
    x_t, eps = _tensors(SHAPE, SHAPE, seed=4, dtype=torch.float32)
    out = pred_x0(x_t, eps, T, abar, "epsilon")
    assert out.dtype == torch.float32
    alpha, sigma = _by_hand(abar, T)
    assert torch.equal(out, ((x_t.double() - sigma * eps.double()) / alpha).float())
    assert pred_x0(x_t, eps, T, abar, "epsilon", dtype=torch.float64).dtype == torch.float64


def test_one_step_x0_from_pure_noise(abar):
    z, eps_hat = _tensors(SHAPE, SHAPE, seed=5)
    a999 = abar.double()[999]
    expected = (z - (1 - a999).sqrt() * eps_hat) / a999.sqrt()
    torch.testing.assert_close(one_step_x0(z, eps_hat, 999, abar, "epsilon"), expected, **TIGHT)
    with pytest.raises(ValueError, match="t_init"):
        one_step_x0(z, eps_hat, 1000, abar, "epsilon")


def test_bad_inputs_raise_one_clear_error(abar):
    x, eps = _tensors(SHAPE, SHAPE)
    with pytest.raises(ValueError, match="epsilon, v_prediction"):
        pred_x0(x, eps, T, abar, "sample")
    with pytest.raises(ValueError, match="one per sample"):
        pred_x0(x, eps, torch.tensor([1, 2]), abar, "epsilon")
    with pytest.raises(ValueError, match="integers"):
        add_noise(x, eps, torch.full((4,), 0.5), abar)
    with pytest.raises(ValueError, match="dmd, sds"):
        vsd_generator_loss(x, x, x, T, abar, weighting="swiftbrush")


def _generator_setup(abar, seed=6):
    """x (the generator's x0, a leaf), x_t, and eps predictions of both models, all by hand."""
    x, noise, eps_real, eps_fake = _tensors(SHAPE, SHAPE, SHAPE, SHAPE, seed=seed)
    x.requires_grad_(True)
    alpha, sigma = _by_hand(abar, T)
    x_t = alpha * x.detach() + sigma * noise
    x0_real, x0_fake = (x_t - sigma * eps_real) / alpha, (x_t - sigma * eps_fake) / alpha
    return x, eps_real, eps_fake, x0_real, x0_fake, sigma


def test_dmd_gradient_closed_form(abar):
    x, _, _, x0_real, x0_fake, _ = _generator_setup(abar)
    loss, logs = vsd_generator_loss(x, x0_real, x0_fake, T, abar, weighting="dmd")
    (grad_x,) = torch.autograd.grad(loss, x)
    p_real, p_fake = x.detach() - x0_real, x.detach() - x0_fake
    normaliser = p_real.abs().reshape(SHAPE[0], -1).mean(dim=1).reshape(-1, 1, 1, 1)
    score_difference = (p_real - p_fake) / normaliser
    mean_reduction = 1.0 / x.numel()
    torch.testing.assert_close(grad_x, score_difference * mean_reduction, **TIGHT)
    assert loss.item() == pytest.approx(0.5 * score_difference.pow(2).mean().item(), rel=1e-12)
    assert logs["normaliser_mean"] == pytest.approx(normaliser.mean().item(), rel=1e-12)


def test_sds_gradient_closed_form(abar):
    x, eps_real, eps_fake, x0_real, x0_fake, sigma = _generator_setup(abar, seed=7)
    loss, logs = vsd_generator_loss(x, x0_real, x0_fake, T, abar, weighting="sds")
    (grad_x,) = torch.autograd.grad(loss, x)
    expected = sigma**2 * (eps_real - eps_fake) / x.numel()  # (1 - abar_t)(eps_real - eps_fake) / N
    torch.testing.assert_close(grad_x, expected, **TIGHT)
    assert logs["w_mean"] == pytest.approx((sigma**2).mean().item(), rel=1e-12)


def test_sds_gradient_from_v_model_outputs(abar):
    """A v model's outputs, converted with pred_x0, give the same sigma^2 (eps_real - eps_fake)."""
    x, x_t, v_real, v_fake = _tensors(SHAPE, SHAPE, SHAPE, SHAPE, seed=8)
    x.requires_grad_(True)
    alpha, sigma = _by_hand(abar, T)
    x0_real, x0_fake = (pred_x0(x_t, v, T, abar, "v_prediction") for v in (v_real, v_fake))
    loss, _ = vsd_generator_loss(x, x0_real, x0_fake, T, abar, weighting="sds")
    (grad_x,) = torch.autograd.grad(loss, x)
    eps_real, eps_fake = sigma * x_t + alpha * v_real, sigma * x_t + alpha * v_fake
    torch.testing.assert_close(grad_x, sigma**2 * (eps_real - eps_fake) / x.numel(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("weighting", ["dmd", "sds"])
def test_descent_step_moves_toward_the_real_prediction(abar, weighting):
    x, _, _, x0_real, _, _ = _generator_setup(abar, seed=9)
    x0_fake = x.detach().clone()  # a fake model that reproduces the generator
    loss, _ = vsd_generator_loss(x, x0_real, x0_fake, T, abar, weighting=weighting)
    (grad_x,) = torch.autograd.grad(loss, x)
    before = (x.detach() - x0_real).flatten(1).norm(dim=1)
    after = (x.detach() - 10.0 * grad_x - x0_real).flatten(1).norm(dim=1)
    assert (after < before).all()


@pytest.mark.parametrize("weighting", ["dmd", "sds"])
def test_descent_direction_is_real_minus_fake(abar, weighting):
    x, _, _, x0_real, x0_fake, _ = _generator_setup(abar, seed=10)
    loss, _ = vsd_generator_loss(x, x0_real, x0_fake, T, abar, weighting=weighting)
    (grad_x,) = torch.autograd.grad(loss, x)
    alignment = (-grad_x * (x0_real - x0_fake)).flatten(1).sum(dim=1)
    assert (alignment > 0).all()


def test_zero_normaliser_gives_finite_loss_and_gradient(abar):
    x, _, _, x0_real, x0_fake, _ = _generator_setup(abar, seed=11)
    x0_real = x0_real.clone()
    x0_real[0] = x.detach()[0]  # p_real == 0 for sample 0, p_fake != 0
    loss, logs = vsd_generator_loss(x, x0_real, x0_fake, T, abar, weighting="dmd")
    (grad_x,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad_x).all()
    assert torch.equal(grad_x[0], torch.zeros_like(grad_x[0]))
    assert logs["normaliser_min"] == 0.0
    p_real, p_fake = x.detach()[1:] - x0_real[1:], x.detach()[1:] - x0_fake[1:]
    normaliser = p_real.abs().flatten(1).mean(dim=1).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(grad_x[1:], (p_real - p_fake) / normaliser / x.numel(), **TIGHT)


def test_generator_loss_in_low_precision_keeps_float32_loss(abar):
    x, _, _, x0_real, x0_fake, _ = _generator_setup(abar, seed=12)
    x_bf16 = x.detach().bfloat16().requires_grad_(True)
    loss, logs = vsd_generator_loss(x_bf16, x0_real, x0_fake, T, abar)
    loss.backward()
    assert loss.dtype == torch.float32 and x_bf16.grad.dtype == torch.bfloat16
    # logs are detached 0-d tensors (read only when a log row is written): no graph, no GPU wait
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in logs.values())


def test_sample_timesteps_range_determinism_and_ends():
    draws = sample_timesteps(20000, generator=torch.Generator().manual_seed(0))
    assert draws.dtype == torch.long and draws.shape == (20000,)
    assert draws.min().item() == 20 and draws.max().item() == 980  # both ends included
    again = sample_timesteps(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    full = sample_timesteps(20000, low_frac=0.0, high_frac=1.0, generator=torch.Generator().manual_seed(1))
    assert full.min().item() == 0 and full.max().item() == 999  # capped at T - 1
    with pytest.raises(ValueError, match="low_frac"):
        sample_timesteps(4, low_frac=0.9, high_frac=0.1)


def test_cfg_closed_form():
    uncond, cond = _tensors((2, 3), (2, 3), seed=13)
    torch.testing.assert_close(cfg(uncond, cond, 1.5), uncond + 1.5 * cond - 1.5 * uncond, **TIGHT)
    torch.testing.assert_close(cfg(uncond, cond, 1.0), cond, **TIGHT)
    torch.testing.assert_close(cfg(uncond, cond, 0.0), uncond, **TIGHT)


def test_fake_denoising_loss_is_mse():
    output, target = _tensors(SHAPE, SHAPE, seed=14, dtype=torch.float32)
    output.requires_grad_(True)
    loss, logs = fake_denoising_loss(output, target)
    torch.testing.assert_close(loss, F.mse_loss(output, target), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(loss, output)
    torch.testing.assert_close(grad, 2 * (output.detach() - target) / output.numel())
    assert list(logs) == ["loss_fake"] and float(logs["loss_fake"]) == loss.item()
    assert not logs["loss_fake"].requires_grad
    with pytest.raises(ValueError, match="one shape"):
        fake_denoising_loss(output, target[:2])
