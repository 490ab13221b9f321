"""Relation inversion (ReVersion; Huang et al., "ReVersion: Diffusion-Based Relation Inversion from
Images", 2023) against the frozen multi-step teacher, for the paper's downstream test: the learned ``<R>``
is then used by the one-step student (1 step, no CFG) and by the teacher (DDIM 50, CFG 7.5).
Reimplemented from the paper's description; no code or prompt text of ReVersion is used.

* A new token ``<R>`` is added to the CLIP tokenizer, its embedding row initialised from ``init_word``'s;
  only that row is trained (:class:`TrainableToken`).
* Loss = ``denoise_weight * MSE(eps_hat, eps)`` + ``steer_weight * steering``. Relation steering is a
  multi-positive InfoNCE on L2-normalised *input token embeddings*: ``s_i = cos(r, e_i) / tau``,
  ``loss = logsumexp_{P u N} s_i - logsumexp_P s_i >= 0``, positives ``P`` = ``num_positives``
  prepositions sampled per step, negatives ``N`` = the caption's other (non-stop) words.
* Relation-focal importance sampling: ``t ~ f(t) ∝ 1 - alpha cos(pi t / T)``, ``t = 0..T-1``, which
  favours high-noise steps where the layout (the relation) is decided.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dkd.backbones.text import PromptEmbeds
from dkd.io import atomic_open
from dkd.train.schedule import add_noise, denoising_target

log = logging.getLogger(__name__)

# Our own list of single-word English spatial/relational prepositions (56, each one CLIP token).
PREPOSITIONS = tuple(
    "aboard about above across after against along alongside amid amidst among amongst around at atop before "
    "behind below beneath beside besides between beyond by down from in inside into like near nearby next of "
    "off on onto opposite out outside over past round through throughout to toward towards under underneath up "
    "upon via with within without".split()
)
# Our own small list of function words that are never negatives (articles, pronouns, auxiliaries, ...).
STOP_WORDS = tuple(
    "a an the this that these those some one two is are was were be been being it its their his her and or but".split()
)
PLACEHOLDER = "{R}"  # the relation's slot in a prompt template


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_token(token) -> None:
    if not isinstance(token, str) or not token or any(c.isspace() for c in token) or PLACEHOLDER in token:
        raise ValueError(f"a relation token must be a non-empty string, no spaces, no '{PLACEHOLDER}'; got {token!r}.")


@dataclass(frozen=True)
class ReVersionConfig:
    """ReVersion's settings (SD1.5): 3000 steps of batch 2 x 4 accumulation at 2.5e-4, scaled by the batch
    (``scale_lr``, as textual inversion's scripts do); AdamW with weight decay 1e-2 (those scripts' default)."""

    token: str = "<R>"
    init_word: str = "and"
    steps: int = 3000
    batch_size: int = 2
    grad_accumulation: int = 4
    lr: float = 2.5e-4
    scale_lr: bool = True
    weight_decay: float = 1e-2
    denoise_weight: float = 1.0
    steer_weight: float = 0.01
    num_positives: int = 4
    temperature: float = 0.07
    importance_alpha: float = 0.5
    seed: int = 0
    prepositions: tuple[str, ...] = PREPOSITIONS

    def __post_init__(self):
        _check_token(self.token)
        if not isinstance(self.init_word, str) or not re.fullmatch(r"\S+", self.init_word):
            raise ValueError(f"init_word must be one word; got {self.init_word!r}.")
        checks = [
            (("steps", "batch_size", "grad_accumulation", "num_positives"), _positive_int, "an integer >= 1"),
            (("lr", "temperature"), lambda v: _finite(v) and v > 0, "a finite number > 0"),
            (("weight_decay", "denoise_weight", "steer_weight"), lambda v: _finite(v) and v >= 0, "a number >= 0"),
            (("importance_alpha",), lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
            (("scale_lr",), lambda v: isinstance(v, bool), "a bool"),
            (("seed",), lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
        ]
        for names, ok, what in checks:
            for name in names:
                if not ok(getattr(self, name)):
                    raise ValueError(f"{name} must be {what}; got {getattr(self, name)!r}.")
        if self.denoise_weight == 0 and self.steer_weight == 0:
            raise ValueError("denoise_weight and steer_weight are both 0: nothing would be trained.")
        words = tuple(self.prepositions) if not isinstance(self.prepositions, str) else ()
        if not words or len(set(words)) != len(words) or not all(isinstance(w, str) and w.isalpha() for w in words):
            raise ValueError(f"prepositions must be distinct single words; got {self.prepositions!r}.")
        if self.num_positives > len(words):
            raise ValueError(f"num_positives ({self.num_positives}) exceeds the {len(words)} prepositions.")
        object.__setattr__(self, "prepositions", words)

    def learning_rate(self, num_processes: int = 1) -> float:
        """``lr x batch_size x grad_accumulation x num_processes`` if ``scale_lr``, else ``lr``."""
        if not _positive_int(num_processes):
            raise ValueError(f"num_processes must be an integer >= 1; got {num_processes!r}.")
        return self.lr * self.batch_size * self.grad_accumulation * num_processes if self.scale_lr else self.lr


def _single_id(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{word!r} must be a single token of the tokenizer; it is {len(ids)}: {ids}.")
    return ids[0]


def _add_token(tokenizer, text_encoder: nn.Module, token: str) -> int:
    _check_token(token)
    if len(tokenizer.encode(token, add_special_tokens=False)) == 1 or tokenizer.add_tokens(token) != 1:
        raise ValueError(f"{token!r} is already a token of the tokenizer's vocabulary; pick a new token.")
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the row is overwritten
    token_id = tokenizer.convert_tokens_to_ids(token)
    if tokenizer.encode(f"a {token} b", add_special_tokens=False)[1:-1] != [token_id]:
        raise ValueError(f"{token!r} was added but does not tokenise as one token.")
    return token_id


def add_relation_token(tokenizer, text_encoder: nn.Module, token: str, init_word: str) -> int:
    """Add ``token`` to the tokenizer, grow the encoder's input embeddings, copy ``init_word``'s row (it
    must be one token) into the new row; return the token's id. Checks come before any change."""
    init_id = _single_id(tokenizer, init_word)
    token_id = _add_token(tokenizer, text_encoder, token)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = weight[init_id]
    return token_id


class TrainableToken:
    """Training of one row of a text encoder's input embeddings, nothing else.

    Every parameter of the encoder is frozen except the embedding matrix (a gradient must reach it). Two
    guards keep the other rows as they were: a gradient hook zeroes their gradient (so no optimiser moment
    builds up and gradient clipping sees only the row), and :meth:`restore_frozen_rows`, to call after each
    ``optimizer.step()``, copies back their saved values (AdamW's decoupled weight decay shrinks every row
    whatever its gradient). After a step and a restore, every row but ``token_id`` is bit-identical.
    """

    def __init__(self, text_encoder: nn.Module, token_id: int):
        self.embedding = text_encoder.get_input_embeddings()
        if not 0 <= token_id < self.embedding.num_embeddings:
            raise ValueError(f"token id {token_id} is outside the {self.embedding.num_embeddings} embedding rows.")
        self.token_id, self.parameter = token_id, self.embedding.weight
        text_encoder.requires_grad_(False)
        self.embedding.weight.requires_grad_(True)
        self._frozen = self.embedding.weight.detach().clone()
        self._hook = self.embedding.weight.register_hook(self._only_row)

    def _only_row(self, grad: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(grad)
        out[self.token_id] = grad[self.token_id]
        return out

    @property
    def vector(self) -> torch.Tensor:
        """The trained row, detached, ``(D,)``."""
        return self.embedding.weight.detach()[self.token_id].clone()

    @torch.no_grad()
    def restore_frozen_rows(self) -> None:
        weight = self.embedding.weight
        row = weight[self.token_id].clone()
        weight.copy_(self._frozen)
        weight[self.token_id] = row

    def remove(self) -> None:
        """Remove the hook and freeze the embedding again."""
        self._hook.remove()
        self.embedding.weight.requires_grad_(False)


def trainable_token_embedding(text_encoder: nn.Module, token_id: int) -> TrainableToken:
    """Set up ``text_encoder`` so that only row ``token_id`` of its input embeddings trains (see
    :class:`TrainableToken`; optimise ``.parameter``, call ``.restore_frozen_rows()`` after each step)."""
    return TrainableToken(text_encoder, token_id)


def preposition_ids(tokenizer, prepositions: Sequence[str]) -> list[int]:
    """The token id of each preposition (each must be one token)."""
    return [_single_id(tokenizer, word) for word in prepositions]


def caption_negatives(tokenizer, caption: str, token: str, stop_words: Sequence[str] = STOP_WORDS) -> list[int]:
    """Distinct token ids (in order) of the caption's words other than ``token`` and ``stop_words``
    (lower-cased, punctuation dropped; a word of several BPE tokens gives all of them)."""
    if not isinstance(caption, str) or token not in caption:
        raise ValueError(f"the caption must contain the relation token {token!r}; got {caption!r}.")
    stop = {w.lower() for w in stop_words}
    words = [w for w in re.findall(r"[a-z0-9']+", caption.replace(token, " ").lower()) if w not in stop]
    ids = [i for w in words for i in tokenizer.encode(w, add_special_tokens=False)]
    token_id = tokenizer.convert_tokens_to_ids(token)
    return [i for i in dict.fromkeys(ids) if i != token_id]


def steering_loss(
    relation_embedding: Tensor, positive_embeddings: Tensor, negative_embeddings: Tensor, *, temperature: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Relation steering: ``logsumexp_{P u N} s_i - logsumexp_P s_i`` with ``s_i = cos(r, e_i) / tau``.

    ``relation_embedding`` ``(D,)``, positives ``(P, D)`` with ``P >= 1``, negatives ``(N, D)`` with
    ``N >= 0`` (no negatives: the loss is 0). Positives and negatives are detached: the gradient reaches
    only ``r``. Computed in float32 at least (float64 for float64 input).
    """
    r, pos, neg = relation_embedding, positive_embeddings, negative_embeddings
    if r.ndim != 1 or pos.ndim != 2 or neg.ndim != 2 or pos.shape[0] < 1 or {pos.shape[1], neg.shape[1]} != {r.numel()}:
        shapes = ", ".join(str(tuple(x.shape)) for x in (r, pos, neg))
        raise ValueError(f"need r (D,), positives (P>=1, D), negatives (N, D); got {shapes}.")
    if not _finite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}.")
    dtype = torch.promote_types(r.dtype, torch.float32)
    others = torch.cat([pos, neg]).detach().to(dtype)
    cos = F.normalize(others, dim=-1) @ F.normalize(r.to(dtype), dim=0)
    s = cos / temperature
    loss = torch.logsumexp(s, 0) - torch.logsumexp(s[: pos.shape[0]], 0)
    logs = {"steer/loss": loss.detach(), "steer/pos_cos": cos[: pos.shape[0]].mean().detach()}
    if neg.shape[0]:
        logs["steer/neg_cos"] = cos[pos.shape[0] :].mean().detach()
    return loss, logs


def relation_focal_density(num_train_timesteps: int, alpha: float) -> np.ndarray:
    """``f(t) = (1 - alpha cos(pi t / T)) / sum_t(...)`` over ``t = 0..T-1`` (float64, sums to 1)."""
    if not _positive_int(num_train_timesteps) or not _finite(alpha) or not 0 <= alpha < 1:
        raise ValueError(f"need T >= 1 and 0 <= alpha < 1; got T={num_train_timesteps!r}, alpha={alpha!r}.")
    t = np.arange(num_train_timesteps, dtype=np.float64)
    f = 1.0 - alpha * np.cos(np.pi * t / num_train_timesteps)
    return f / f.sum()


def relation_focal_timesteps(
    num_train_timesteps: int, batch: int, *, alpha: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``batch`` timesteps drawn (with replacement) from :func:`relation_focal_density`; int64, on CPU."""
    if not _positive_int(batch):
        raise ValueError(f"batch must be an integer >= 1; got {batch!r}.")
    density = torch.from_numpy(relation_focal_density(num_train_timesteps, alpha))
    return torch.multinomial(density, batch, replacement=True, generator=generator)


def denoise_loss(
    model_output: Tensor, x0: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor, prediction_type: str = "epsilon"
) -> tuple[Tensor, dict[str, Tensor]]:
    """``mean((model_output - target)^2)``, target ``eps`` (or ``v``) of ``x_t = add_noise(x0, noise, t)``
    (:func:`dkd.train.schedule.denoising_target`); float32 at least."""
    if not model_output.shape == x0.shape == noise.shape:
        raise ValueError(f"shapes differ: {tuple(model_output.shape)}, {tuple(x0.shape)}, {tuple(noise.shape)}.")
    target = denoising_target(x0, noise, t, alphas_cumprod, prediction_type)
    dtype = torch.promote_types(model_output.dtype, torch.float32)
    loss = F.mse_loss(model_output.to(dtype), target.to(dtype))
    return loss, {"denoise/mse": loss.detach()}


def reversion_step_loss(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    relation_embedding: torch.Tensor,
    positive_embeddings: torch.Tensor,
    negative_embeddings: torch.Tensor,
    *,
    config: ReVersionConfig,
    prediction_type: str = "epsilon",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``denoise_weight * denoise_loss + steer_weight * steering_loss`` (negatives: the batch's captions')."""
    mse, logs = denoise_loss(model_output, x0, noise, t, alphas_cumprod, prediction_type)
    steer, steer_logs = steering_loss(
        relation_embedding, positive_embeddings, negative_embeddings, temperature=config.temperature
    )
    loss = config.denoise_weight * mse + config.steer_weight * steer.to(mse.dtype)
    return loss, {**logs, **steer_logs, "loss": loss.detach()}


def relation_prompts(templates: Sequence[str], relation_token: str, *, per_relation: int | None = None) -> list[str]:
    """Prompts from templates with one ``{R}`` slot each (e.g. ``"a cat {R} a basket"``), ``{R}`` replaced
    by ``relation_token``. ``per_relation=None``: one prompt per template; ``n``: ``n`` prompts, the
    templates taken in order and cycled (``template[i % len]``)."""
    _check_token(relation_token)
    if isinstance(templates, str) or not templates:
        raise ValueError("templates must be a non-empty sequence of strings.")
    bad = [x for x in templates if not isinstance(x, str) or x.count(PLACEHOLDER) != 1]
    if bad:
        raise ValueError(f"every template needs exactly one '{PLACEHOLDER}'; these do not: {bad}.")
    if per_relation is not None and not _positive_int(per_relation):
        raise ValueError(f"per_relation must be None or an integer >= 1; got {per_relation!r}.")
    count = len(templates) if per_relation is None else per_relation
    return [templates[i % len(templates)].replace(PLACEHOLDER, relation_token) for i in range(count)]


def relation_text(prompt: str, relation_words: str, *, token: str = "<R>") -> str:
    """``prompt`` with ``token`` replaced by the relation's words (the text a CLIP-T proxy scores)."""
    if not isinstance(prompt, str) or token not in prompt:
        raise ValueError(f"the prompt must contain {token!r}; got {prompt!r}.")
    if not isinstance(relation_words, str) or not relation_words.strip():
        raise ValueError(f"relation_words must be non-empty text; got {relation_words!r}.")
    return prompt.replace(token, relation_words.strip())


def save_relation_embedding(path: str | Path, token: str, vector: torch.Tensor) -> Path:
    """Write ``{token: (D,) float tensor}`` as safetensors (diffusers' single-token textual-inversion
    layout), the token also in the metadata; atomically."""
    from safetensors.torch import save

    _check_token(token)
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1 or not vector.is_floating_point():
        raise ValueError(f"vector must be a 1-D float tensor; got {getattr(vector, 'shape', vector)!r}.")
    with atomic_open(path, "wb") as handle:
        handle.write(save({token: vector.detach().cpu().contiguous()}, metadata={"token": token}))
    return Path(path)


def load_relation_embedding(path: str | Path, tokenizer, text_encoder: nn.Module) -> int:
    """Add the file's token to the tokenizer and encoder with its saved vector; return its id."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        token, keys = (handle.metadata() or {}).get("token"), list(handle.keys())
        if keys != [token]:
            raise ValueError(f"{path}: expected one tensor named after the metadata token {token!r}; got {keys}.")
        vector = handle.get_tensor(token)
    weight = text_encoder.get_input_embeddings().weight
    if vector.shape != weight.shape[1:]:
        raise ValueError(f"{path}: vector of shape {tuple(vector.shape)}, encoder rows {tuple(weight.shape[1:])}.")
    token_id = _add_token(tokenizer, text_encoder, token)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = vector.to(weight)
    return token_id


def invert_relation(teacher, exemplars: Sequence[tuple[torch.Tensor, str]], config: ReVersionConfig, *, out) -> Path:
    """Learn ``config.token`` from exemplar ``(image (3, H, W) in [-1, 1], caption with the token)`` pairs
    against the frozen SD teacher (single process); write the vector to ``out`` (safetensors) and return it.

    The token is added to ``teacher.tokenizer``/``teacher.text_encoder`` in place (with its learned row).
    Each micro-batch: ``batch_size`` exemplars drawn with replacement, VAE latents sampled, relation-focal
    ``t``, fresh noise and ``num_positives`` prepositions, all from one generator seeded ``config.seed``.
    """
    if teacher.family != "sd" or teacher.text_encoder is None or teacher.vae is None:
        raise ValueError("invert_relation needs an SD-family teacher loaded with its text encoder and VAE.")
    exemplars = list(exemplars)
    if not exemplars or not all(isinstance(x, torch.Tensor) and x.ndim == 3 for x, _ in exemplars):
        raise ValueError("exemplars must be a non-empty sequence of (image (3, H, W), caption) pairs.")
    tokenizer, encoder, vae = teacher.tokenizer, teacher.text_encoder, teacher.vae
    if encoder.get_input_embeddings().weight.dtype not in (torch.float32, torch.float64):
        raise ValueError("invert_relation trains a token embedding with AdamW: load the teacher in float32.")
    stop = STOP_WORDS + config.prepositions
    negatives = [caption_negatives(tokenizer, caption, config.token, stop) for _, caption in exemplars]
    positives = torch.tensor(preposition_ids(tokenizer, config.prepositions))
    token_id = add_relation_token(tokenizer, encoder, config.token, config.init_word)
    row = trainable_token_embedding(encoder, token_id)
    weight, device, steps_t = row.parameter, row.parameter.device, teacher.scheduler.config.num_train_timesteps
    optimiser = torch.optim.AdamW([weight], lr=config.learning_rate(), weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(config.seed)
    text_kwargs = dict(padding="max_length", max_length=teacher.spec.text_max_length, truncation=True)
    try:
        for step in range(config.steps):
            for _ in range(config.grad_accumulation):
                pick = torch.randint(len(exemplars), (config.batch_size,), generator=g).tolist()
                images = torch.stack([exemplars[i][0] for i in pick]).to(device, vae.dtype)
                with torch.no_grad():
                    x0 = vae.encode(images).latent_dist.sample(g) * vae.config.scaling_factor
                noise = torch.randn(x0.shape, generator=g).to(device, x0.dtype)
                t = relation_focal_timesteps(steps_t, len(pick), alpha=config.importance_alpha, generator=g).to(device)
                ids = tokenizer([exemplars[i][1] for i in pick], return_tensors="pt", **text_kwargs).input_ids.to(
                    device
                )
                x_t = add_noise(x0, noise, t, teacher.alphas_cumprod)
                pred = teacher.predict(x_t, t, PromptEmbeds(encoder(ids)[0]))
                chosen = positives[torch.randperm(len(positives), generator=g)[: config.num_positives]].to(device)
                neg = torch.tensor(sorted({j for i in pick for j in negatives[i]}), dtype=torch.long, device=device)
                embeds = weight[token_id], weight[chosen], weight[neg]
                kwargs = dict(config=config, prediction_type=teacher.prediction_type)
                loss, logs = reversion_step_loss(pred, x0, noise, t, teacher.alphas_cumprod, *embeds, **kwargs)
                (loss / config.grad_accumulation).backward()
            optimiser.step()
            row.restore_frozen_rows()
            optimiser.zero_grad(set_to_none=True)
            if step % 100 == 0 or step == config.steps - 1:
                log.info("step %d/%d %s", step + 1, config.steps, {k: f"{v.item():.4g}" for k, v in logs.items()})
    finally:
        row.remove()
    return save_relation_embedding(out, config.token, row.vector)
