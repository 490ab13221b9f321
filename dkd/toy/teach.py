"""Training the toy teacher: the denoising loss on the digits' training split, with
classifier-free dropout of the prompt so that CFG works, and an EMA of the weights.

Prompt embeddings come from the frozen text encoder once for every (digit, wording) prompt
and the empty prompt; each step draws a wording per image, and with probability
``cfg_dropout`` replaces its prompt by the empty one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..backbones.text import encode_prompts
from ..train.schedule import add_noise
from .backbone import TEXT_LENGTH, toy_scheduler, toy_text_encoder, toy_unet
from .data import TEMPLATES, all_prompts, load_split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyTeacherConfig:
    """Settings of the toy teacher's training (defaults: about 2 minutes on 2 CPU cores)."""

    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    cfg_dropout: float = 0.1
    ema_decay: float = 0.995
    seed: int = 0

    def __post_init__(self):
        if self.steps <= 0 or self.batch_size <= 0 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"steps, batch_size and lr must be > 0, warmup_steps >= 0; got {asdict(self)}.")
        if not 0 <= self.cfg_dropout < 1 or not 0 <= self.ema_decay < 1:
            raise ValueError(f"cfg_dropout and ema_decay must be in [0, 1); got {asdict(self)}.")

    @classmethod
    def from_dict(cls, values: dict) -> ToyTeacherConfig:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown toy teacher settings {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**values)


@torch.no_grad()
def prompt_table(tokenizer, text_encoder) -> torch.Tensor:
    """Embeddings ``(10 * len(TEMPLATES) + 1, tokens, dim)``: row ``digit * len(TEMPLATES) + wording``,
    last row the empty prompt."""
    prompts = all_prompts() + [""]
    return encode_prompts(
        prompts, tokenizer=tokenizer, text_encoder=text_encoder, max_length=TEXT_LENGTH, family="sd"
    ).hidden_states


def train_teacher(config: ToyTeacherConfig, tokenizer, *, progress: bool = True) -> tuple[torch.nn.Module, list[dict]]:
    """Train the toy U-Net; returns the EMA weights' model and the per-100-step log rows."""
    from diffusers.training_utils import EMAModel

    generator = torch.Generator().manual_seed(config.seed)
    data = load_split("train")
    table = prompt_table(tokenizer, toy_text_encoder())
    alphas_cumprod = toy_scheduler().alphas_cumprod
    unet = toy_unet(config.seed).train()
    ema = EMAModel(unet.parameters(), decay=config.ema_decay)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / max(1, config.warmup_steps))
            * 0.5
            * (1 + torch.cos(torch.tensor(torch.pi * step / config.steps)).item())
        ),
    )
    rows, running = [], 0.0
    for step in tqdm(range(config.steps), desc="toy teacher", disable=not progress):
        index = torch.randint(len(data), (config.batch_size,), generator=generator)
        x0, labels = data.images[index], data.labels[index]
        wording = torch.randint(len(TEMPLATES), (config.batch_size,), generator=generator)
        rows_of = labels * len(TEMPLATES) + wording
        dropped = torch.rand(config.batch_size, generator=generator) < config.cfg_dropout
        rows_of = torch.where(dropped, torch.full_like(rows_of, len(table) - 1), rows_of)
        t = torch.randint(0, len(alphas_cumprod), (config.batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = add_noise(x0, noise, t, alphas_cumprod)
        loss = F.mse_loss(unet(x_t, t, encoder_hidden_states=table[rows_of]).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        ema.step(unet.parameters())
        running += loss.item()
        if (step + 1) % 100 == 0:
            rows.append({"step": step + 1, "loss": running / 100, "lr": schedule.get_last_lr()[0]})
            log.info("step %d loss %.4f", step + 1, running / 100)
            running = 0.0
    ema.copy_to(unet.parameters())
    return unet.eval().requires_grad_(False), rows
