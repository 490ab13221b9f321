"""ReVersion's relation inversion (Huang et al., 2023): the relation token's row is the only thing that
trains (after real AdamW steps), the steering loss and the relation-focal density against float64 hand
computations, the sampler against its density (chi-square), the embedding file's round trip, prompts,
config checks, and a few inversion steps on the tiny SD backbone."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer, CLIPTextModel

from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.downstream.reversion.inversion import (
    PREPOSITIONS,
    ReVersionConfig,
    add_relation_token,
    caption_negatives,
    denoise_loss,
    invert_relation,
    load_relation_embedding,
    preposition_ids,
    relation_focal_density,
    relation_focal_timesteps,
    relation_prompts,
    relation_text,
    reversion_step_loss,
    save_relation_embedding,
    steering_loss,
    trainable_token_embedding,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=3)


def _text(folder):
    """A fresh tokenizer and text encoder of the tiny SD backbone (each test adds its own token)."""
    return AutoTokenizer.from_pretrained(folder / "tokenizer"), CLIPTextModel.from_pretrained(folder / "text_encoder")


# ----------------------------------------------------------------------------------------- the token


def test_relation_token_is_added_and_initialised_from_the_init_word(folder):
    tokenizer, encoder = _text(folder)
    before = encoder.get_input_embeddings().weight.detach().clone()
    (and_id,) = tokenizer.encode("and", add_special_tokens=False)
    token_id = add_relation_token(tokenizer, encoder, "<R>", "and")
    weight = encoder.get_input_embeddings().weight.detach()
    assert token_id == before.shape[0] == len(tokenizer) - 1 and weight.shape == (before.shape[0] + 1, 16)
    assert torch.equal(weight[token_id], before[and_id]) and torch.equal(weight[:-1], before)
    assert tokenizer("a cat <R> a dog").input_ids[3] == token_id
    with pytest.raises(ValueError, match="already"):
        add_relation_token(tokenizer, encoder, "<R>", "and")


@pytest.mark.parametrize(
    "token,init_word,match",
    [
        ("<S>", "astride", "single token"),
        ("<S>", "on top", "single token"),
        ("dog", "and", "already"),
        ("a b", "and", "no spaces"),
    ],
)
def test_add_relation_token_refuses_bad_input_before_changing_anything(folder, token, init_word, match):
    tokenizer, encoder = _text(folder)
    size = len(tokenizer)
    with pytest.raises(ValueError, match=match):
        add_relation_token(tokenizer, encoder, token, init_word)
    assert len(tokenizer) == size == encoder.get_input_embeddings().num_embeddings


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_step_changes_only_the_relation_row(folder, weight_decay):
    """A real loss through the encoder reaches the rows of every token of the caption; after a real AdamW
    step (and the restore), only the <R> row differs, every other parameter bit-identical."""
    tokenizer, encoder = _text(folder)
    token_id = add_relation_token(tokenizer, encoder, "<R>", "and")
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    (rows,) = [n for n, p in encoder.named_parameters() if p is encoder.get_input_embeddings().weight]
    row = trainable_token_embedding(encoder, token_id)
    assert [name for name, p in encoder.named_parameters() if p.requires_grad] == [rows]
    optimiser = torch.optim.AdamW([row.parameter], lr=1e-2, weight_decay=weight_decay)
    ids = tokenizer(["a cat <R> a dog", "<R> under the table"], padding="max_length", return_tensors="pt").input_ids
    encoder(ids)[0].pow(2).mean().backward()
    grad = row.parameter.grad
    assert grad[token_id].abs().sum() > 0
    assert torch.count_nonzero(grad[torch.arange(len(grad)) != token_id]) == 0  # the hook's work
    optimiser.step()
    weight = row.parameter.detach()
    others = torch.arange(len(weight)) != token_id
    embedding = before[rows]
    # Without the restore: zero gradients keep Adam's update at 0, but decoupled weight decay shrinks all rows.
    assert torch.equal(weight[others], embedding[others]) == (weight_decay == 0)
    row.restore_frozen_rows()
    assert not torch.equal(weight[token_id], embedding[token_id])
    assert torch.equal(weight[others], embedding[others])
    for name, p in encoder.named_parameters():
        if name != rows:
            assert torch.equal(p, before[name]), name
    assert torch.equal(row.vector, weight[token_id])
    row.remove()
    assert not row.parameter.requires_grad


def test_caption_negatives_are_the_other_content_words(folder):
    tokenizer, _ = _text(folder)
    add_relation_token(tokenizer, CLIPTextModel.from_pretrained(folder / "text_encoder"), "<R>", "and")
    ids = lambda word: tokenizer.encode(word, add_special_tokens=False)  # noqa: E731
    got = caption_negatives(tokenizer, "A cat <R>, the Dog and a cat.", "<R>")
    assert got == ids("cat") + ids("dog")
    # a word of several BPE tokens gives all of them; extra stop words are dropped
    assert caption_negatives(tokenizer, "astride <R> on grass", "<R>", ("on",)) == ids("astride") + ids("grass")
    with pytest.raises(ValueError, match="must contain"):
        caption_negatives(tokenizer, "a cat on a dog", "<R>")


def test_default_prepositions_are_distinct_single_tokens(folder):
    tokenizer, _ = _text(folder)
    assert len(PREPOSITIONS) == len(set(PREPOSITIONS)) == 56
    assert preposition_ids(tokenizer, PREPOSITIONS) == [
        tokenizer.encode(w, add_special_tokens=False)[0] for w in PREPOSITIONS
    ]
    with pytest.raises(ValueError, match="single token"):
        preposition_ids(tokenizer, ("on", "astride"))


# ----------------------------------------------------------------------------------------- the losses


def _steer_reference(r, pos, neg, tau):
    """float64 by hand: logsumexp over all of cos/tau minus logsumexp over the positives."""
    cos = lambda a, b: float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))  # noqa: E731
    s_pos = [cos(r, e) / tau for e in pos]
    s_all = s_pos + [cos(r, e) / tau for e in neg]
    return math.log(sum(math.exp(s) for s in s_all)) - math.log(sum(math.exp(s) for s in s_pos))


def test_steering_loss_matches_a_hand_computation_and_is_detached():
    """2-D toy: r along x (length 2); positives at cos 1 and 0, negatives at cos -1 and 1/sqrt 2 (length 3)."""
    tau = 0.5
    r = torch.tensor([2.0, 0.0], dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    neg = torch.tensor([[-1.0, 0.0], [3.0, 3.0]], dtype=torch.float64, requires_grad=True)
    loss, logs = steering_loss(r, pos, neg, temperature=tau)
    by_hand = math.log(math.e**2 + 1 + math.e**-2 + math.exp(math.sqrt(2))) - math.log(math.e**2 + 1)
    assert loss.dtype == torch.float64 and loss.item() == pytest.approx(by_hand, rel=1e-12)
    assert logs["steer/pos_cos"].item() == pytest.approx(0.5) and logs["steer/neg_cos"].item() == pytest.approx(
        (-1 + math.sqrt(0.5)) / 2
    )
    loss.backward()
    assert pos.grad is None and neg.grad is None and r.grad.abs().sum() > 0
    with torch.no_grad():  # a small step against the gradient lowers the loss
        lower = steering_loss(r - 1e-3 * r.grad, pos, neg, temperature=tau)[0]
    assert lower < loss


def test_steering_loss_is_nonnegative_and_vanishes_when_positives_dominate():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        r, pos, neg = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(8,), (4, 8), (5, 8)])
        loss = steering_loss(r, pos, neg, temperature=0.07)[0].item()
        assert loss >= 0 and loss == pytest.approx(_steer_reference(r.numpy(), pos.numpy(), neg.numpy(), 0.07))
    # r aligned with all positives, negatives orthogonal: loss = log(1 + N e^{-1/tau} / P) -> 0
    r = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    pos = torch.tensor([[2.0, 0, 0], [0.5, 0, 0], [1, 0, 0], [3, 0, 0]], dtype=torch.float64)
    neg = torch.tensor([[0.0, 1, 0], [0, 0, 1], [0, 2, 2]], dtype=torch.float64)
    loss = steering_loss(r, pos, neg, temperature=0.07)[0].item()
    assert loss == pytest.approx(math.log1p(3 * math.exp(-1 / 0.07) / 4), rel=1e-9) and loss < 1e-6
    assert steering_loss(r, pos, neg[:0], temperature=0.07)[0].item() == 0.0  # no negatives
    with pytest.raises(ValueError):
        steering_loss(r, pos[:0], neg, temperature=0.07)
    with pytest.raises(ValueError):
        steering_loss(r, pos, neg, temperature=0.0)


def test_denoise_and_step_loss_against_hand_computation():
    g = torch.Generator().manual_seed(1)
    x0, noise, out = (torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    abar = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    t = torch.tensor([1, 2])
    loss, logs = denoise_loss(out, x0, noise, t, abar)
    assert loss.item() == pytest.approx(float(((out.numpy() - noise.numpy()) ** 2).mean()), rel=1e-12)
    v = (
        np.sqrt(abar.numpy()[t.numpy()])[:, None, None, None] * noise.numpy()
        - np.sqrt(1 - abar.numpy()[t.numpy()])[:, None, None, None] * x0.numpy()
    )
    assert denoise_loss(out, x0, noise, t, abar, "v_prediction")[0].item() == pytest.approx(
        float(((out.numpy() - v) ** 2).mean()), rel=1e-12
    )
    r, pos, neg = torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    config = ReVersionConfig(denoise_weight=0.5, steer_weight=0.25, num_positives=1)
    total, logs = reversion_step_loss(out, x0, noise, t, abar, r, pos, neg, config=config)
    steer = math.log(math.exp(math.sqrt(0.5) / 0.07) + 1) - math.sqrt(0.5) / 0.07
    assert total.item() == pytest.approx(0.5 * loss.item() + 0.25 * steer, rel=1e-6)
    assert set(logs) >= {"denoise/mse", "steer/loss", "loss"}
    with pytest.raises(ValueError, match="shapes"):
        denoise_loss(out[:1], x0, noise, t, abar)


# ----------------------------------------------------------------------------------------- timesteps


def test_relation_focal_density_by_hand():
    # T = 4: cos(pi t / 4) = 1, sqrt2/2, 0, -sqrt2/2 -> f ∝ 0.5, 1 - sqrt2/4, 1, 1 + sqrt2/4 (sum 3.5)
    q = math.sqrt(2) / 4
    np.testing.assert_allclose(relation_focal_density(4, 0.5), np.array([0.5, 1 - q, 1, 1 + q]) / 3.5, rtol=1e-14)
    np.testing.assert_allclose(relation_focal_density(7, 0.0), np.full(7, 1 / 7), rtol=1e-14)
    f = relation_focal_density(1000, 0.5)
    assert f.dtype == np.float64 and f.sum() == pytest.approx(1.0, abs=1e-12) and np.all(np.diff(f) > 0)
    exact = (1 - 0.5 * math.cos(math.pi * 999 / 1000)) / (1 - 0.5)
    assert f[-1] / f[0] == pytest.approx(exact, rel=1e-12) and abs(exact - 3) < 1e-4
    for bad in [(0, 0.5), (10, 1.0), (10, -0.1), (10, float("nan"))]:
        with pytest.raises(ValueError):
            relation_focal_density(*bad)


def test_relation_focal_timesteps_follow_the_density():
    """Chi-square of 200k draws over T = 10 against the density: below the 0.1% critical value (df 9)."""
    n, T = 200_000, 10
    t = relation_focal_timesteps(T, n, alpha=0.5, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (n,) and 0 <= t.min() and t.max() < T
    counts = np.bincount(t.numpy(), minlength=T)
    expected = n * relation_focal_density(T, 0.5)
    assert float(((counts - expected) ** 2 / expected).sum()) < 27.88
    again = relation_focal_timesteps(T, 64, alpha=0.5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, relation_focal_timesteps(T, 64, alpha=0.5, generator=torch.Generator().manual_seed(5)))


# ----------------------------------------------------------------------------------------- prompts, files


def test_relation_prompts_and_text():
    templates = ["a cat {R} a dog", "{R} a table", "a box {R}"]
    assert relation_prompts(templates, "<R>") == ["a cat <R> a dog", "<R> a table", "a box <R>"]
    seven = relation_prompts(templates, "<R>", per_relation=7)
    assert len(seven) == 7 and [seven.count(p) for p in relation_prompts(templates, "<R>")] == [3, 2, 2]
    assert seven[3] == "a cat <R> a dog" and relation_prompts(templates, "<R>", per_relation=2) == seven[:2]
    assert relation_text("a cat <R> a dog", " painted on ") == "a cat painted on a dog"
    assert relation_text("a cat <S> a dog", "in", token="<S>") == "a cat in a dog"
    for bad in [dict(templates=["a cat"]), dict(templates=["{R} {R}"]), dict(templates="{R}"), dict(per_relation=0)]:
        with pytest.raises(ValueError):
            relation_prompts(**{"templates": templates, "relation_token": "<R>", **bad})
    with pytest.raises(ValueError):
        relation_text("a cat a dog", "on")


def test_relation_embedding_round_trip(folder, tmp_path):
    vector = torch.randn(16, generator=torch.Generator().manual_seed(2))
    path = save_relation_embedding(tmp_path / "rel" / "r.safetensors", "<R>", vector)
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.safetensors"]  # no temporary file left
    with safe_open(str(path), framework="pt") as handle:
        assert list(handle.keys()) == ["<R>"] and handle.metadata() == {"token": "<R>"}
    tokenizer, encoder = _text(folder)
    size = len(tokenizer)
    token_id = load_relation_embedding(path, tokenizer, encoder)
    assert token_id == size and tokenizer("x <R> y").input_ids[2] == token_id
    assert torch.equal(encoder.get_input_embeddings().weight[token_id].detach(), vector)
    with pytest.raises(ValueError, match="already"):
        load_relation_embedding(path, tokenizer, encoder)
    save_relation_embedding(tmp_path / "wide.safetensors", "<W>", torch.zeros(17))
    with pytest.raises(ValueError, match="shape"):
        load_relation_embedding(tmp_path / "wide.safetensors", *_text(folder))
    with pytest.raises(ValueError):
        save_relation_embedding(tmp_path / "x.safetensors", "<R>", torch.zeros(2, 16))


# ----------------------------------------------------------------------------------------- config, training


@pytest.mark.parametrize(
    "bad",
    [
        dict(token=""),
        dict(token="<a b>"),
        dict(init_word="on top"),
        dict(steps=0),
        dict(batch_size=1.5),
        dict(grad_accumulation=True),
        dict(lr=0),
        dict(lr=float("inf")),
        dict(temperature=-1),
        dict(steer_weight=-0.1),
        dict(denoise_weight=0, steer_weight=0),
        dict(importance_alpha=1.0),
        dict(num_positives=57),
        dict(prepositions=("on", "on")),
        dict(prepositions="on"),
        dict(prepositions=("on top",)),
        dict(scale_lr="yes"),
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        ReVersionConfig(**bad)


def test_config_learning_rate_scaling():
    config = ReVersionConfig(prepositions=["on", "in", "under", "over"])
    assert config.prepositions == ("on", "in", "under", "over")
    assert config.learning_rate() == pytest.approx(2.5e-4 * 2 * 4) and config.learning_rate(2) == pytest.approx(4e-3)
    assert ReVersionConfig(scale_lr=False).learning_rate(8) == 2.5e-4
    with pytest.raises(ValueError):
        config.learning_rate(0)


def test_invert_relation_trains_only_the_relation_row(folder, tmp_path):
    """Two steps on the tiny SD teacher: only <R>'s row and nothing of the U-Net changes; reproducible;
    steering alone pulls the row toward the prepositions."""
    g = torch.Generator().manual_seed(0)
    exemplars = [(torch.rand(3, 16, 16, generator=g) * 2 - 1, c) for c in ["a cat <R> a dog", "a box <R> a bed"]]
    config = ReVersionConfig(steps=2, batch_size=2, grad_accumulation=2)
    teacher = load_teacher("tiny-sd", str(folder))
    weight0 = teacher.text_encoder.get_input_embeddings().weight.detach().clone()
    unet0 = {k: v.clone() for k, v in teacher.denoiser.state_dict().items()}
    path = invert_relation(teacher, exemplars, config, out=tmp_path / "r.safetensors")
    token_id = teacher.tokenizer.convert_tokens_to_ids("<R>")
    embedding = teacher.text_encoder.get_input_embeddings()
    weight = embedding.weight.detach()
    assert token_id == len(weight0) == len(weight) - 1 and not embedding.weight.requires_grad
    assert torch.equal(weight[:token_id], weight0)
    assert all(torch.equal(v, unet0[k]) for k, v in teacher.denoiser.state_dict().items())
    (and_id,) = teacher.tokenizer.encode("and", add_special_tokens=False)
    assert not torch.equal(weight[token_id], weight0[and_id])
    tokenizer, encoder = _text(folder)
    assert torch.equal(
        encoder.get_input_embeddings().weight[load_relation_embedding(path, tokenizer, encoder)], weight[-1]
    )

    def fresh():  # the same teacher with a fresh tokenizer and text encoder
        tokenizer, encoder = _text(folder)
        return dataclasses.replace(teacher, tokenizer=tokenizer, text_encoder=encoder)

    again = fresh()
    invert_relation(again, exemplars, config, out=tmp_path / "again.safetensors")
    assert torch.equal(again.text_encoder.get_input_embeddings().weight[-1], weight[-1])
    # Steering alone, four fixed positives: the steering loss of the row against the prepositions and the
    # exemplars' words (their frozen rows, looked up by hand) falls from init_word's by an order of magnitude.
    preps = ("on", "under", "in", "over")
    steer_only = ReVersionConfig(
        steps=3, batch_size=2, grad_accumulation=1, lr=5e-3, scale_lr=False, denoise_weight=0.0, steer_weight=1.0,
        prepositions=preps, num_positives=4,
    )  # fmt: skip
    third = fresh()
    invert_relation(third, exemplars, steer_only, out=tmp_path / "steer.safetensors")
    pos = weight0[[tokenizer.encode(w, add_special_tokens=False)[0] for w in preps]]
    neg = weight0[[tokenizer.encode(w, add_special_tokens=False)[0] for w in ("cat", "dog", "box", "bed")]]
    start = steering_loss(weight0[and_id], pos, neg, temperature=0.07)[0]
    end = steering_loss(third.text_encoder.get_input_embeddings().weight[-1].detach(), pos, neg, temperature=0.07)[0]
    assert end < 0.1 * start
