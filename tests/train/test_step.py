"""One DKD iteration on tiny teachers: what changes, what must not, and closed-form checks."""

from __future__ import annotations

import copy

import pytest
import torch

from dkd.adapters import AdapterSpec, apply_adapter
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.train.step import VSDConfig, fake_loss, generate, generator_loss


@pytest.fixture(scope="module", params=["sd", "pixart"])
def teacher(request, tmp_path_factory):
    folder = save_tiny_backbone(request.param, tmp_path_factory.mktemp(request.param), seed=1)
    return load_teacher(f"tiny-{request.param}", str(folder))


def _role(teacher, role, method, rank):
    model = copy.deepcopy(teacher.denoiser)
    return apply_adapter(model, AdapterSpec(teacher.spec.name, role=role, method=method, rank=rank, init="zero_xavier"))


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


@pytest.mark.parametrize("method", ["lorad", "lora", "dora", "ft"])
def test_one_iteration_changes_only_the_intended_parameters(teacher, method):
    student = _role(teacher, "student", method, 4)
    fake = _role(teacher, "fake", "lorad", 2)
    opt_g = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    opt_f = torch.optim.AdamW([p for p in fake.parameters() if p.requires_grad], lr=1e-2)
    before = {"teacher": _snapshot(teacher.denoiser), "student": _snapshot(student), "fake": _snapshot(fake)}
    embeds, uncond, noise, g = _batch(teacher)
    config = VSDConfig(guidance_scale=1.5)

    x0 = generate(teacher, student, noise, embeds)
    loss, logs = generator_loss(teacher, fake, x0, embeds, uncond, config, generator=g)
    opt_g.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in fake.parameters()), "the generator loss must not reach the fake model"
    opt_g.step()
    assert _changed(fake, before["fake"]) == set()
    loss_f, logs_f = fake_loss(teacher, fake, x0, embeds, config, generator=g)
    opt_f.zero_grad()
    loss_f.backward()
    opt_f.step()

    assert torch.isfinite(loss) and torch.isfinite(loss_f) and logs["grad_norm"] > 0 and logs_f["loss_fake"] > 0
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
        _, logs = generator_loss(teacher, fake, x0, embeds, uncond, VSDConfig(guidance_scale=scale), generator=g)
        norms[scale] = logs["grad_norm"]
    assert norms[1.0] < 1e-4 * norms[1.5]


def test_same_generator_seed_gives_the_same_losses(teacher):
    student = _role(teacher, "student", "lorad", 4)
    fake = _role(teacher, "fake", "lorad", 2)
    results = []
    for _ in range(2):
        embeds, uncond, noise, g = _batch(teacher, seed=5)
        x0 = generate(teacher, student, noise, embeds)
        results.append(generator_loss(teacher, fake, x0, embeds, uncond, VSDConfig(), generator=g)[0].item())
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"weighting": "l2"}, "weighting"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"t_init": 999.0}, "t_init"),
        ({"t_range": (0.5, 0.1)}, "low_frac"),
        ({"fake_t_range": (0.1,)}, "fake_t_range"),
    ],
)
def test_invalid_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VSDConfig(**kwargs)


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
        loss, _ = generator_loss(teacher, fake, x0, embeds, uncond, VSDConfig(), generator=g)
    assert seen == [(torch.float32, torch.float32)] and torch.isfinite(loss)
