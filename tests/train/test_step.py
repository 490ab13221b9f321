"""One iteration of DKD and of each baseline on tiny teachers: what changes, what must not, and
closed-form checks of each hook (generator input, guidance per role, fake loss)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from dkd.adapters import AdapterSpec, apply_adapter
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.train.objective import ObjectiveConfig
from dkd.train.schedule import sample_timesteps
from dkd.train.step import fake_loss, frozen, generate, generator_loss


@pytest.fixture(scope="module", params=["sd", "pixart"])
def teacher(request, tmp_path_factory):
    folder = save_tiny_backbone(request.param, tmp_path_factory.mktemp(request.param), seed=1)
    return load_teacher(f"tiny-{request.param}", str(folder))


def _role(teacher, role, method, rank):
    model = copy.deepcopy(teacher.denoiser)
    return apply_adapter(model, AdapterSpec(teacher.spec.name, role=role, method=method, rank=rank, init="zero_xavier"))


def _perturb(fake):
    """A fake model that differs from the teacher (its zero-initialised adapter would not)."""
    with torch.no_grad():
        for name, param in fake.named_parameters():
            if "lorad_" in name:
                param.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
    return fake


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(module, before):
    return {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}


def _batch(teacher, seed=0):
    g = torch.Generator().manual_seed(seed)
    embeds = teacher.encode(["a red apple", "a handwritten digit seven"])
    uncond = teacher.encode([""]).repeat(2)
    noise = torch.randn(2, *teacher.latent_shape, generator=g)
    return embeds, uncond, noise, g


def test_generate_is_the_one_step_x0_of_eq_algorithm_1(teacher):
    student = _role(teacher, "student", "lorad", 4)
    embeds, _, noise, _ = _batch(teacher)
    x0 = generate(teacher, student, noise, embeds)
    eps = teacher.predict(noise, torch.full((2,), 999), embeds, denoiser=student)
    abar = teacher.alphas_cumprod[999].double()
    expected = (noise.double() - (1 - abar).sqrt() * eps.double()) / abar.sqrt()
    torch.testing.assert_close(x0.double(), expected, rtol=1e-5, atol=1e-5)
    assert x0.requires_grad


@pytest.mark.parametrize(
    "method,objective",
    [(m, "dkd") for m in ("lorad", "lora", "dora", "ft")] + [("lorad", "sid_lsg"), ("ft", "swiftbrush")],
)
def test_one_iteration_changes_only_the_intended_parameters(teacher, method, objective):
    student = _role(teacher, "student", method, 4)
    fake = _perturb(_role(teacher, "fake", "lorad", 2))
    opt_g = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    opt_f = torch.optim.AdamW([p for p in fake.parameters() if p.requires_grad], lr=1e-2)
    before = {"teacher": _snapshot(teacher.denoiser), "student": _snapshot(student), "fake": _snapshot(fake)}
    embeds, uncond, noise, g = _batch(teacher)
    config = ObjectiveConfig.named(objective)

    x0 = generate(teacher, student, noise, embeds, config.t_init, config.scaled_input)
    # SiD's loss reaches through the fake model, frozen by the caller until the backward pass is done;
    # the others' do not reach it at all
    with frozen(fake) if config.keeps_graph else contextlib.nullcontext():
        loss, logs = generator_loss(teacher, fake, x0, embeds, uncond, config, generator=g)
        opt_g.zero_grad()
        loss.backward()
    assert all(p.grad is None for p in fake.parameters()), "the generator loss must not reach the fake model"
    assert all(p.requires_grad for n, p in fake.named_parameters() if "lorad_" in n)  # SiD: unfrozen again
    opt_g.step()
    assert _changed(fake, before["fake"]) == set()
    loss_f, logs_f = fake_loss(teacher, fake, x0, embeds, uncond, config, generator=g)
    opt_f.zero_grad()
    loss_f.backward()
    opt_f.step()

    assert torch.isfinite(loss) and torch.isfinite(loss_f) and logs_f["loss_fake"] > 0
    assert logs["score_diff" if objective == "sid_lsg" else "grad_norm"] > 0
    assert _changed(teacher.denoiser, before["teacher"]) == set()
    changed = _changed(student, before["student"])
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    if method != "ft":
        assert all(("lora_" in n or "lorad_" in n) for n in changed)
    fake_changed = _changed(fake, before["fake"])
    assert fake_changed and all("lorad_" in n for n in fake_changed)


def test_vsd_gradient_vanishes_when_fake_equals_real(teacher):
    """With CFG 1 and an untrained fake (zero-init adapter == teacher), real and fake agree up to
    float rounding (batched CFG pass vs single pass); with CFG 1.5 they do not."""
    student = _role(teacher, "student", "lorad", 4)
    fake = _role(teacher, "fake", "lorad", 2)
    norms = {}
    for scale in (1.0, 1.5):
        embeds, uncond, noise, g = _batch(teacher)
        x0 = generate(teacher, student, noise, embeds)
        _, logs = generator_loss(teacher, fake, x0, embeds, uncond, ObjectiveConfig(guidance_scale=scale), generator=g)
        norms[scale] = logs["grad_norm"]
    assert norms[1.0] < 1e-4 * norms[1.5]


def test_same_generator_seed_gives_the_same_losses(teacher):
    student = _role(teacher, "student", "lorad", 4)
    fake = _role(teacher, "fake", "lorad", 2)
    results = []
    for _ in range(2):
        embeds, uncond, noise, g = _batch(teacher, seed=5)
        x0 = generate(teacher, student, noise, embeds)
        results.append(generator_loss(teacher, fake, x0, embeds, uncond, ObjectiveConfig(), generator=g)[0].item())
    assert results[0] == results[1]


def test_cfg_is_combined_in_float32_under_bf16_autocast(teacher, monkeypatch):
    """The real model's two bf16 predictions are combined in float32: bf16 rounding of the
    combination would be as large as the network's own output rounding."""
    from dkd.train import step as step_module

    seen = []
    original = step_module.cfg
    monkeypatch.setattr(step_module, "cfg", lambda u, c, s: seen.append((u.dtype, c.dtype)) or original(u, c, s))
    student, fake = _role(teacher, "student", "lorad", 4), _role(teacher, "fake", "lorad", 2)
    embeds, uncond, noise, g = _batch(teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x0 = generate(teacher, student, noise, embeds)
        loss, _ = generator_loss(teacher, fake, x0, embeds, uncond, ObjectiveConfig(), generator=g)
    assert seen == [(torch.float32, torch.float32)] and torch.isfinite(loss)


def _eps(teacher, x_t, t, embeds, uncond, scale, denoiser=None):
    """A model's CFG'd prediction, written out: uncond + scale (cond - uncond), in float64."""
    cond = teacher.predict(x_t, t, embeds, denoiser=denoiser).double()
    return (
        cond if scale == 1 else (lambda u: u + scale * (cond - u))(teacher.predict(x_t, t, uncond, denoiser).double())
    )


def test_scaled_generator_input_is_sid_s_noised_zero(teacher):
    """SiD-LSG: G sees sigma_625 z at t = 625 and x0 = (x_in - sigma_625 eps_hat) / alpha_625."""
    student = _role(teacher, "student", "lorad", 4)
    embeds, _, noise, _ = _batch(teacher)
    x0 = generate(teacher, student, noise, embeds, 625, scaled_input=True)
    abar = teacher.alphas_cumprod[625].double()
    x_in = (1 - abar).sqrt() * noise.double()
    eps = teacher.predict(x_in.float(), torch.full((2,), 625), embeds, denoiser=student).double()
    torch.testing.assert_close(x0.double(), (x_in - (1 - abar).sqrt() * eps) / abar.sqrt(), rtol=1e-5, atol=1e-5)


def test_swiftbrush_gradient_guides_both_models(teacher):
    """d loss / d x0 = sigma_t^2 (eps_real^4.5 - eps_fake^4.5) / N: CFG 4.5 on the teacher and on the
    fake alike, no normalisation (SwiftBrush's VSD), from the same t and noise the loss drew."""
    if teacher.prediction_type != "epsilon":
        pytest.skip("the closed form is written for eps models")
    student, fake = _role(teacher, "student", "lorad", 4), _role(teacher, "fake", "lorad", 2)
    _perturb(fake)
    embeds, uncond, noise, _ = _batch(teacher)
    objective = ObjectiveConfig.named("swiftbrush")
    x0 = generate(teacher, student, noise, embeds).detach().requires_grad_(True)
    loss, _ = generator_loss(teacher, fake, x0, embeds, uncond, objective, generator=torch.Generator().manual_seed(9))
    loss.backward()
    g = torch.Generator().manual_seed(9)  # the loss's draws, repeated: t, then the noise
    t = sample_timesteps(2, 0.02, 0.98, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    abar = teacher.alphas_cumprod.double()[t].reshape(-1, 1, 1, 1)
    x_t = (abar.sqrt() * x0.detach().double() + (1 - abar).sqrt() * eps.double()).float()
    with torch.no_grad():
        real = _eps(teacher, x_t, t, embeds, uncond, 4.5)
        fake_eps = _eps(teacher, x_t, t, embeds, uncond, 4.5, denoiser=fake)
    expected = (1 - abar) * (real - fake_eps) / x0.numel()
    scale = float(expected.abs().max())  # float32 networks, batched vs single calls: rounding of the difference
    torch.testing.assert_close(x0.grad.double(), expected, rtol=1e-3, atol=1e-3 * scale)
    assert not torch.allclose(
        expected, (1 - abar) * (real - _eps(teacher, x_t, t, embeds, uncond, 1, fake)) / x0.numel()
    )


def test_fake_loss_with_cfg_weighting_and_all_prompts_dropped(teacher):
    """The fake's loss with SiD's kappa_1 = 1.5 on its own output (gradient through both branches),
    SwiftBrush's alpha-bar weight and every prompt dropped (p = 1): written out by hand."""
    fake = _role(teacher, "fake", "lorad", 2)
    embeds, uncond, noise, _ = _batch(teacher)
    x0 = noise * 0.5
    objective = ObjectiveConfig(
        fake_train_guidance_scale=1.5, fake_weighting="alpha_bar", null_prompt_p=1.0, fake_t_range=(0.0, 1.0)
    )
    loss, logs = fake_loss(teacher, fake, x0, embeds, uncond, objective, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    t = sample_timesteps(2, 0.0, 1.0, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    abar = teacher.alphas_cumprod.double()[t].reshape(-1, 1, 1, 1)
    x_t = (abar.sqrt() * x0.double() + (1 - abar).sqrt() * eps.double()).float()
    out = _eps(teacher, x_t, t, uncond, uncond, 1.5, denoiser=fake)  # the prompts are all null
    target = eps.double() if teacher.prediction_type == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
    torch.testing.assert_close(loss.double(), (abar * (out - target) ** 2).mean(), rtol=1e-5, atol=1e-8)
    assert logs["null_prompts"] == 1.0
