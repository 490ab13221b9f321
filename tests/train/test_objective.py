"""The baselines' losses and hooks against independent references: SiD's generator loss in float64
(closed forms and finite differences through two tiny models), the alpha-bar weighted fake loss,
PG-SB's guidance sampler, null-prompt dropout, the clamped CLIP loss, its schedule and scorers, and
the objective settings."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from dkd.backbones import PromptEmbeds
from dkd.train import OBJECTIVES, ObjectiveConfig, fake_denoising_loss, sid_generator_loss
from dkd.train.losses import clamped_score_loss
from dkd.train.objective import drop_prompts, sample_guidance
from dkd.train.scorers import ClipScorer, DigitScorer, ScorerSpec

SHAPE = (3, 2, 4, 4)


def _tensors(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for shape in shapes]


def _sid_by_hand(x, y_r, y_f, alpha):
    """(1/B) sum_b w_b [(1 - alpha) |y_r - y_f|^2 + (y_r - y_f) . (y_f - x)], w_b = 1 / mean |x - y_r|."""
    total = 0.0
    for b in range(x.shape[0]):
        d = (y_r[b] - y_f[b]).flatten()
        w = 1.0 / (x[b] - y_r[b]).abs().mean()
        total += w * ((1 - alpha) * d.dot(d) + d.dot((y_f[b] - x[b]).flatten()))
    return total / x.shape[0]


@pytest.mark.parametrize("alpha", [1.0, 1.2])
def test_sid_loss_value_and_gradient_with_fixed_predictions(alpha):
    """With the predictions held fixed, dL/dx = -(1/B) w_b (y_r - y_f): the generator moves its sample
    along the score difference (the weight is detached, as in SiD and DMD2)."""
    x, y_r, y_f = _tensors(SHAPE, SHAPE, SHAPE)
    x.requires_grad_(True)
    loss, logs = sid_generator_loss(x, y_r, y_f, alpha=alpha)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, _sid_by_hand(x.detach(), y_r, y_f, alpha), rtol=1e-12, atol=1e-12)
    loss.backward()
    w = 1.0 / (x.detach() - y_r).abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(x.grad, -w * (y_r - y_f) / x.shape[0], rtol=1e-12, atol=1e-12)
    assert logs["weight_mean"] == pytest.approx(float(w.mean()))


@pytest.mark.parametrize("alpha", [1.0, 1.2])
def test_sid_loss_gradient_through_linear_models_is_the_closed_form(alpha):
    """y_r = R x, y_f = F x (the graph kept through both 'models'), d = (R - F) x:
    L = w [(1 - alpha) |d|^2 + d . (F x - x)], grad = w [2 (1 - alpha) (R-F)^T d + (R-F)^T (F - I) x + (F - I)^T d]."""
    n = 6
    x, r, f = _tensors((1, n), (n, n), (n, n), seed=3)
    x.requires_grad_(True)
    weight = torch.tensor([[0.7]], dtype=torch.float64)  # fixed: the closed form treats it as a constant
    loss, _ = sid_generator_loss(x, x @ r.T, x @ f.T, alpha=alpha, weight=weight)
    loss.backward()
    v, eye = x.detach()[0], torch.eye(n, dtype=torch.float64)
    d = (r - f) @ v
    expected = 0.7 * (2 * (1 - alpha) * (r - f).T @ d + (r - f).T @ (f - eye) @ v + (f - eye).T @ d)
    torch.testing.assert_close(x.grad[0], expected, rtol=1e-12, atol=1e-12)
    value = 0.7 * ((1 - alpha) * d.dot(d) + d.dot((f - eye) @ v))
    torch.testing.assert_close(loss, value, rtol=1e-12, atol=1e-12)


def test_sid_loss_gradient_through_two_tiny_models_matches_finite_differences():
    """The generator's gradient with the graph kept through a 'real' and a 'fake' conv net at
    x_t = alpha_t x + sigma_t eps (gradcheck: autograd against central differences, float64)."""
    torch.manual_seed(0)
    real, fake = (torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 2, 1))
                  for _ in range(2))  # fmt: skip
    real, fake = real.double().requires_grad_(False), fake.double().requires_grad_(False)
    (eps,) = _tensors(SHAPE, seed=1)
    alpha_t, sigma_t = 0.6, 0.8
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).reshape(3, 1, 1, 1)

    def loss(x):
        x_t = alpha_t * x + sigma_t * eps
        return sid_generator_loss(x, real(x_t), fake(x_t), alpha=1.2, weight=weight)[0]

    (x,) = _tensors(SHAPE, seed=2)
    assert torch.autograd.gradcheck(loss, (x.requires_grad_(True),), eps=1e-6, atol=1e-7)


def test_sid_loss_rejects_mismatched_shapes():
    x, y = _tensors(SHAPE, (3, 2, 4, 5))
    with pytest.raises(ValueError, match="one shape"):
        sid_generator_loss(x, x, y)


def test_alpha_bar_weighted_fake_loss_is_swiftbrush_form():
    """mean((alpha_t out - alpha_t eps)^2) = mean(abar_t (out - eps)^2), per sample's t."""
    out, eps = _tensors(SHAPE, SHAPE, seed=4)
    abar = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod.double()
    t = torch.tensor([0, 500, 999])
    alpha = abar[t].sqrt().reshape(3, 1, 1, 1)
    loss, logs = fake_denoising_loss(out, eps, weight=alpha**2)
    torch.testing.assert_close(loss, ((alpha * out - alpha * eps) ** 2).mean(), rtol=1e-12, atol=1e-15)
    assert logs["loss_fake"] == loss.detach()
    unweighted, _ = fake_denoising_loss(out, eps)
    torch.testing.assert_close(unweighted, ((out - eps) ** 2).mean(), rtol=1e-12, atol=1e-15)


def test_guidance_sampler_range_seed_and_resume():
    g = torch.Generator().manual_seed(7)
    draws = torch.stack([sample_guidance(0.5, 3.0, generator=g) for _ in range(4000)])
    assert draws.min() >= 0.5 and draws.max() < 3.0 and abs(float(draws.mean()) - 1.75) < 0.04
    assert float(draws.std()) == pytest.approx(2.5 / 12**0.5, rel=0.05)  # uniform's standard deviation
    g = torch.Generator().manual_seed(7)
    first = [sample_guidance(0.5, 3.0, generator=g) for _ in range(3)]
    state = g.get_state()  # a checkpoint's generator state: the draws go on as if never stopped
    later = [sample_guidance(0.5, 3.0, generator=g) for _ in range(3)]
    resumed = torch.Generator()
    resumed.set_state(state)
    assert [sample_guidance(0.5, 3.0, generator=resumed) for _ in range(3)] == later
    assert torch.stack(first + later).equal(draws[:6])


def test_guidance_is_one_draw_for_both_models_or_the_constants():
    pg = ObjectiveConfig(guidance_range=(0.5, 4.0))
    real, fake = pg.guidance(torch.Generator().manual_seed(1), "cpu")
    assert real is fake and 0.5 <= float(real) < 4.0
    assert ObjectiveConfig.named("swiftbrush").guidance(None, "cpu") == (4.5, 4.5)
    assert ObjectiveConfig().guidance(None, "cpu") == (1.5, 1.0)


def _embeds(batch, value, mask=False):
    states = torch.full((batch, 3, 2), float(value))
    return PromptEmbeds(states, torch.ones(batch, 3, dtype=torch.long) * value if mask else None)


@pytest.mark.parametrize("mask", [False, True])
def test_null_prompt_dropout_per_sample_and_per_batch(mask):
    embeds, uncond = _embeds(400, 1, mask), _embeds(400, 0, mask)
    out, dropped = drop_prompts(embeds, uncond, 0.25, "sample", generator=torch.Generator().manual_seed(0))
    assert 0.2 < float(dropped.float().mean()) < 0.3  # about p of the samples
    kept = out.hidden_states[:, 0, 0] == 1
    assert torch.equal(kept, ~dropped) and (out.attention_mask is None) == (not mask)
    batch_draws = [
        drop_prompts(embeds, uncond, 0.25, "batch", generator=torch.Generator().manual_seed(s))[1] for s in range(40)
    ]
    assert all(bool(d.all()) or not bool(d.any()) for d in batch_draws)  # the whole batch or none
    assert 3 <= sum(bool(d.all()) for d in batch_draws) <= 18
    same, none = drop_prompts(embeds, uncond, 0.0, "sample", generator=None)
    assert same is embeds and not none.any()


def test_named_objectives_and_their_errors():
    sid = ObjectiveConfig.named("sid_lsg", sid_alpha=1.2)
    assert (sid.t_init, sid.scaled_input, sid.generator_loss, sid.sid_alpha, sid.order) == (
        625, True, "sid", 1.2, "fake_first"
    )  # fmt: skip
    assert (
        set(OBJECTIVES) == {"dkd", "sid_lsg", "swiftbrush", "pg_sb", "swiftbrush_v2"}
        and OBJECTIVES["dkd"] == ObjectiveConfig()
    )
    for bad, message in [
        ({"generator_loss": "l2"}, "generator_loss"),
        ({"guidance_scale": "1e-4"}, "YAML"),
        ({"guidance_range": (3.0, 1.0)}, "guidance_range"),
        ({"null_prompt_p": 1.5}, "probability"),
        ({"order": "fake_first"}, "fresh"),
        ({"t_init": 999.0}, "t_init"),
        ({"t_range": (0.5, 0.1)}, "low_frac"),
        ({"fake_t_range": (0.1,)}, "fake_t_range"),
        ({"name": "sid"}, "objective"),
    ]:
        with pytest.raises(ValueError, match=message):
            ObjectiveConfig(**bad)
    with pytest.raises(ValueError, match="unknown objective settings"):
        ObjectiveConfig.named("dkd", guidance=2.0)
    with pytest.raises(ValueError, match="renamed"):
        ObjectiveConfig.named("dkd", name="swiftbrush")


def test_clamped_score_loss_is_zero_above_the_margin_and_linear_below():
    score = torch.tensor([0.9, 0.35, 0.2, -0.1], dtype=torch.float64, requires_grad=True)
    loss, logs = clamped_score_loss(score, margin=0.35)
    torch.testing.assert_close(loss, torch.tensor((0.15 + 0.45) / 4, dtype=torch.float64))
    loss.backward()
    assert score.grad.tolist() == [0.0, 0.0, -0.25, -0.25]  # -1/B below the margin, none at or above
    assert float(logs["clip_active"]) == 0.5 and float(logs["clip_score"]) == pytest.approx(0.3375)
    with pytest.raises(ValueError, match="one value per sample"):
        clamped_score_loss(score.detach()[None], margin=0.35)


def test_clip_weight_goes_linearly_from_start_to_end_over_the_run():
    objective = ObjectiveConfig.named("pg_sb")
    assert (objective.clip_weight, objective.clip_weight_end, objective.clip_margin) == (0.1, 0.0, 0.37)
    assert objective.guidance_range == (0.5, 3.0) and objective.scored and not ObjectiveConfig().scored
    weights = [objective.clip_weight_at(step, 5) for step in range(5)]
    assert weights == pytest.approx([0.1, 0.075, 0.05, 0.025, 0.0])
    assert objective.clip_weight_at(0, 1) == 0.1


def test_digit_scorer_is_the_probability_of_the_prompted_digit_with_a_gradient():
    from dkd.toy.evaluator import DigitClassifier

    torch.manual_seed(0)
    classifier = DigitClassifier().eval().requires_grad_(False)
    scorer = DigitScorer(classifier)
    x0 = torch.randn(3, 1, 8, 8, requires_grad=True)
    prompts = ["a handwritten digit seven", "the number 2", "a handwritten digit zero"]
    score = scorer(x0, prompts)
    expected = classifier(x0.detach()).softmax(dim=1)[torch.arange(3), torch.tensor([7, 2, 0])]
    torch.testing.assert_close(score.detach(), expected)
    score.sum().backward()
    assert x0.grad.abs().sum() > 0


def test_clip_scorer_is_the_cosine_of_open_clip_embeddings_of_the_decoded_sample():
    """A tiny TAESD-shaped decoder whose output is already CLIP's input size: the score is the cosine of
    open_clip's image embedding of (decoded + 1) / 2, normalised by its preprocessing's mean and std,
    and of the text embedding of the prompt (open_clip's own transforms written out), with a gradient."""
    import open_clip
    from diffusers import AutoencoderTiny
    from torchvision.transforms import Normalize

    torch.manual_seed(0)
    decoder = AutoencoderTiny(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1), latent_channels=4,
    ).eval().requires_grad_(False)  # fmt: skip
    clip = open_clip.create_model("ViT-S-32", pretrained=None).eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer("ViT-S-32")
    scorer = ClipScorer(decoder, clip, tokenizer)
    x0 = torch.randn(2, 4, 112, 112, requires_grad=True)
    prompts = ["a red fox in the snow", "a bowl of soup"]
    score = scorer(x0, prompts)
    cfg = clip.visual.preprocess_cfg
    with torch.no_grad():
        pixels = ((decoder.decode(x0).sample + 1) / 2).clamp(0, 1)
        image = clip.encode_image(Normalize(cfg["mean"], cfg["std"])(pixels))
        text = clip.encode_text(tokenizer(prompts))
    expected = (image / image.norm(dim=-1, keepdim=True) * (text / text.norm(dim=-1, keepdim=True))).sum(-1)
    torch.testing.assert_close(score.detach(), expected, rtol=1e-4, atol=1e-5)
    score.sum().backward()
    assert x0.grad.abs().sum() > 0 and all(p.grad is None for p in clip.parameters())


def test_scorer_spec_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        ScorerSpec("dino")
    with pytest.raises(ValueError, match="classifier"):
        ScorerSpec("toy")
    assert ScorerSpec("clip").to_dict()["model"] == "ViT-B-32"
