"""DreamBooth training on the project's trainer machinery (paper F.2): one subject, one method, one U-Net.

:class:`DreamBoothTrainer` fine-tunes a copy of a backbone's U-Net (the teacher's, or the exported DKD
student's) as :class:`~dkd.downstream.dreambooth.method.DreamBoothConfig` says: the adapter (or every weight) of
:func:`~dkd.downstream.dreambooth.method.apply_adapter`, Adam at a constant learning rate, the prior-preservation
loss on a batch of ``batch_size`` instance examples then as many class examples, each noised at a uniform
timestep (the backbone's DDPM schedule, its prediction type's target), the photos through the VAE (a latent
sampled from its posterior). Every random draw of a step comes from the run's generator, and the examples of
step ``s`` are a pure function of ``(seed, s)`` (:class:`SubjectBatches`), so the run is a function of its
settings alone.

Like the distillation loop (``dkd.train.loop``) it runs under accelerate, writes ``log.csv`` (one row per
``log_every`` steps, ``dkd.train.logger``) and checkpoints (``dkd.train.checkpoint``: the U-Net's trainable
weights, the optimiser, scheduler and random state, atomic, the ``keep_checkpoints`` newest kept) through
``dkd.train.resume.CheckpointedRun``; started again on the same folder it resumes from the latest checkpoint,
bit-identically on the CPU; SIGTERM and SIGUSR1 make it save after the current step and raise
``TrainingInterrupted`` (``dkd.train.signals``). One process (the paper's runs fit one GPU).

:func:`export_arm` / :func:`load_arm`: the trained weights (the adapter: ``save_adapter``; ``ft``: the whole
U-Net) and ``dreambooth.json`` (settings, trainable parameter count) of an arm, and the base loaded with them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...backbones import PromptEmbeds, Teacher
from ...io import atomic_write_text
from ...metrics.images import list_images
from ...train.checkpoint import latest_checkpoint, load_state, save_checkpoint, training_cost
from ...train.logger import CsvLogger, closing_all
from ...train.loop import NonFiniteLossError, TrainingInterrupted
from ...train.resume import CheckpointedRun
from ...train.signals import StopSignals
from .method import (
    ADAPTER_FILE,
    DreamBoothConfig,
    apply_adapter,
    cropped_tensor,
    load_adapter,
    prior_preservation_loss,
    resized_photo,
    save_adapter,
    trainable_parameters,
)

MODEL_NAME = "unet"  # the checkpoint's one trained model (unet.safetensors)
ARM_FILE = "dreambooth.json"
FULL_WEIGHTS = "unet.safetensors"  # an ``ft`` arm's U-Net
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainSettings:
    """A DreamBooth run: the method's settings (``dreambooth``) and the trainer's: ``checkpoint_every``
    and ``log_every`` steps, the ``keep_checkpoints`` newest checkpoints kept, accelerate's
    ``mixed_precision`` (trainable weights stay float32). Only ``dreambooth`` is the run's identity."""

    dreambooth: DreamBoothConfig
    checkpoint_every: int = 100
    keep_checkpoints: int = 1
    log_every: int = 10
    mixed_precision: str = "no"

    def __post_init__(self):
        if not isinstance(self.dreambooth, DreamBoothConfig):
            raise ValueError(f"dreambooth must be a DreamBoothConfig; got {type(self.dreambooth).__name__}.")
        for name in ("checkpoint_every", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}; got {self.mixed_precision!r}.")

    def to_dict(self) -> dict:
        return {**asdict(self), "dreambooth": config_dict(self.dreambooth)}


def config_dict(config: DreamBoothConfig) -> dict:
    """``config`` as JSON-ready values (``DreamBoothConfig(**config_dict(c)) == c``)."""
    return {**asdict(config), "targets": list(config.targets)}


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SubjectBatches:
    """The pixels of each step: example ``e = step * batch_size + j`` takes instance photo ``perm_k[e % N]``
    (``perm_k``: epoch ``k = e // N``'s seeded permutation of the N photos) and class image ``perm'_k'[e % M]``
    likewise (the first ``class_images`` of the class folder, sorted by name), each cropped with a generator
    seeded by ``(seed, e)``; the photos are read and resized once. ``pixels(step)``:
    ``(2 batch_size, 3, R, R)``, instance examples first."""

    def __init__(self, instance_dir: str | os.PathLike, class_dir: str | os.PathLike, config: DreamBoothConfig):
        self.config = config
        self.files = {"instance": list_images(instance_dir), "class": list_images(class_dir)[: config.class_images]}
        if not self.files["instance"]:
            raise ValueError(f"no instance images (.png, .jpg, .jpeg, .webp) in {str(instance_dir)!r}.")
        if len(self.files["class"]) < config.class_images:
            raise ValueError(f"{config.class_images} class images needed; {str(class_dir)!r} has "
                             f"{len(self.files['class'])}.")  # fmt: skip
        self._photos: dict[Path, object] = {}

    def index(self, kind: str, example: int) -> int:
        count = len(self.files[kind])
        stream = 0 if kind == "instance" else 1
        permutation = np.random.default_rng(_seed(self.config.seed, stream, example // count)).permutation(count)
        return int(permutation[example % count])

    def _tensor(self, kind: str, example: int) -> torch.Tensor:
        path = self.files[kind][self.index(kind, example)]
        if path not in self._photos:
            self._photos[path] = resized_photo(path, self.config.resolution)
        generator = torch.Generator().manual_seed(_seed(self.config.seed, 2 + (kind == "class"), example))
        return cropped_tensor(
            self._photos[path], self.config.resolution, center_crop=self.config.center_crop, generator=generator
        )

    def pixels(self, step: int) -> torch.Tensor:
        examples = range(step * self.config.batch_size, (step + 1) * self.config.batch_size)
        return torch.stack([self._tensor(kind, e) for kind in ("instance", "class") for e in examples])


def _digest(files: list[Path]) -> list[str]:
    return [f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}" for p in files]


def _checksum(module: nn.Module) -> list[str]:
    with torch.no_grad():
        params = list(module.parameters())
        total = sum(p.double().sum().item() for p in params)
        squares = sum(p.double().square().sum().item() for p in params)
    return [f"{total:.9g}", f"{squares:.9g}"]


def run_fingerprint(config: DreamBoothConfig, base: Teacher, batches: SubjectBatches, prompts: tuple) -> str:
    """What a checkpoint belongs to: the method's settings, the prompts, the base U-Net and text encoder
    weights, and the photos and class images (names and contents)."""
    record = {
        "config": config_dict(config),
        "prompts": list(prompts),
        "backbone": base.spec.name,
        "unet": _checksum(base.denoiser),
        "text_encoder": _checksum(base.text_encoder),
        "data": {kind: _digest(files) for kind, files in batches.files.items()},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class DreamBoothResult:
    output_dir: Path
    steps: int
    checkpoint: Path
    unet: nn.Module
    trainable: int
    cost: dict
    attempts: list


class DreamBoothTrainer(CheckpointedRun):
    """One DreamBooth run of ``settings`` on ``base`` (an SD-family ``Teacher``: its U-Net is copied and
    trained, its VAE, text encoder and schedule used frozen) with the photos of ``instance_dir`` and the
    class images of ``class_dir`` (``prompts``: the instance and the class prompt), in ``output_dir``
    (``checkpoints/``, ``log.csv``, ``config.json``)."""

    def __init__(
        self,
        settings: TrainSettings,
        base: Teacher,
        instance_dir,
        class_dir,
        output_dir,
        *,
        prompts: tuple[str, str],
        accelerator=None,
    ):
        from accelerate import Accelerator

        config = settings.dreambooth
        if base.family != "sd" or base.vae is None or base.text_encoder is None:
            raise ValueError(f"DreamBooth needs an SD-family latent backbone with its VAE and text encoder; "
                             f"got {base.spec.name!r}.")  # fmt: skip
        if isinstance(prompts, str) or len(prompts) != 2 or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"prompts must be (instance prompt, class prompt); got {prompts!r}.")
        self.config, self.base, self.output_dir, self.prompts = settings, base, Path(output_dir), tuple(prompts)
        self.acc = accelerator or Accelerator(mixed_precision=settings.mixed_precision)
        if self.acc.num_processes != 1:
            raise ValueError(f"DreamBooth trains on one process; got {self.acc.num_processes}.")
        self.batches = SubjectBatches(instance_dir, class_dir, config)
        self.total_steps = config.steps
        for module in (base.vae, base.text_encoder):
            module.to(self.acc.device)
        torch.manual_seed(config.seed)  # the adapter's initialisation depends on the run's seed only
        unet = apply_adapter(copy.deepcopy(base.denoiser), config)
        for param in unet.parameters():
            if param.requires_grad:
                param.data = param.data.float()
        self.trainable = trainable_parameters(unet)
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=config.lr, fused=all(p.is_cuda for p in params) or None)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant
        unet, optimizer = self.acc.prepare(unet.train(), optimizer)
        self.models, self.optims, self.scheds = {MODEL_NAME: unet}, {MODEL_NAME: optimizer}, {MODEL_NAME: schedule}
        self.generator = torch.Generator(device=self.acc.device).manual_seed(config.seed)
        instance, klass = (base.encode([prompt]) for prompt in self.prompts)
        self.embeds = PromptEmbeds.cat([instance.repeat(config.batch_size), klass.repeat(config.batch_size)])
        self.embeds = self.embeds.to(self.acc.device)
        self.fingerprint = run_fingerprint(config, base, self.batches, self.prompts)
        self.step = 0
        self.attempts: list[dict] = []
        self._attempt: dict | None = None
        self._timer = [0.0, 0.0]

    # -- the checkpoints' clock and writer (resume.CheckpointedRun) ----------------------------
    def _now(self) -> float:
        return time.perf_counter()

    def _write_checkpoint(self, *args, **kwargs) -> Path:
        return save_checkpoint(*args, **kwargs)

    # -- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One Adam step on the prior-preservation loss of step ``self.step``'s batch."""
        config, base, device = self.config.dreambooth, self.base, self.acc.device
        unet, optimizer = self.models[MODEL_NAME], self.optims[MODEL_NAME]
        pixels = self.batches.pixels(self.step).to(device, base.vae.dtype)
        with torch.no_grad():
            posterior = base.vae.encode(pixels).latent_dist
            latents = (posterior.sample(generator=self.generator) * base.vae.config.scaling_factor).float()
        noise = torch.randn(latents.shape, generator=self.generator, device=device)
        steps = base.scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (len(latents),), generator=self.generator, device=device)
        noisy = base.scheduler.add_noise(latents, noise, t)
        target = noise if base.prediction_type == "epsilon" else base.scheduler.get_velocity(latents, noise, t)
        with self.acc.autocast():
            pred = base.predict(noisy, t, self.embeds, denoiser=unet)
        loss, logs = prior_preservation_loss(pred, target, prior_weight=config.prior_weight)
        self.acc.backward(loss)
        params = [p for p in unet.parameters() if p.requires_grad]
        limit = math.inf if config.grad_clip is None else config.grad_clip
        norm = float(self.acc.clip_grad_norm_(params, limit))
        if not math.isfinite(norm):
            raise NonFiniteLossError(
                f"non-finite {'loss' if not torch.isfinite(loss) else 'gradient'} at step {self.step + 1}; no update "
                f"was applied; the last good checkpoint is {latest_checkpoint(self.checkpoint_root) or 'none'}."
            )
        optimizer.step()
        self.scheds[MODEL_NAME].step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach(), **logs, "grad_norm": norm, "lr": self.scheds[MODEL_NAME].get_last_lr()[0]}

    # -- the run -----------------------------------------------------------------------------
    def run(self, progress: bool = True) -> DreamBoothResult:
        from tqdm.auto import tqdm

        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.resume()
        record = {**self.config.to_dict(), "fingerprint": self.fingerprint, "trainable_parameters": self.trainable}
        atomic_write_text(self.output_dir / "config.json", json.dumps(record, indent=2))
        logger = CsvLogger(self.output_dir / "log.csv", self.step or None)
        checkpoint = None
        with closing_all(logger), StopSignals() as stop:
            self._start_attempt()
            bar = tqdm(total=self.total_steps, initial=self.step, disable=not progress, desc="dreambooth")
            while self.step < self.total_steps:
                logs = self.train_step()
                self.step += 1
                bar.update(1)
                done = self.step == self.total_steps
                if self.step % self.config.log_every == 0 or done:
                    logger.write(self.step, {key: float(value) for key, value in logs.items()})
                if done or self.step % self.config.checkpoint_every == 0 or stop.signal is not None:
                    checkpoint = self.save()
                if stop.signal is not None and not done:
                    raise TrainingInterrupted(f"signal {stop.signal} at step {self.step}; checkpoint {checkpoint}")
            bar.close()
        self._attempt = None
        checkpoint = checkpoint or latest_checkpoint(self.checkpoint_root)
        state = load_state(checkpoint)
        unet = self.acc.unwrap_model(self.models[MODEL_NAME])
        return DreamBoothResult(
            self.output_dir, self.step, checkpoint, unet, self.trainable, training_cost(state), state["attempts"]
        )


def train_arm(
    settings: TrainSettings,
    base: Teacher,
    instance_dir,
    class_dir,
    train_dir,
    *,
    prompts: tuple[str, str],
    progress: bool = True,
) -> DreamBoothResult:
    """Run (or resume, or load when finished) one DreamBooth run in ``train_dir``; see :class:`DreamBoothTrainer`."""
    trainer = DreamBoothTrainer(settings, base, instance_dir, class_dir, train_dir, prompts=prompts)
    return trainer.run(progress=progress)


def export_arm(result: DreamBoothResult, config: DreamBoothConfig, folder: str | os.PathLike, **record) -> Path:
    """Write a finished run into ``folder``: the adapter (``save_adapter``) or, for ``ft``, the whole U-Net
    (``unet.safetensors``), and ``dreambooth.json`` (the settings, the trainable parameter count, the
    steps and ``record``). Returns the JSON file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if config.method == "ft":
        save_file({k: v.detach().cpu().contiguous() for k, v in result.unet.state_dict().items()},
                  str(folder / FULL_WEIGHTS))  # fmt: skip
    else:
        save_adapter(result.unet, folder / ADAPTER_FILE, config)
    info = {"config": config_dict(config), "trainable_parameters": result.trainable, "steps": result.steps, **record}
    return atomic_write_text(folder / ARM_FILE, json.dumps(info, indent=2) + "\n")


def read_arm(folder: str | os.PathLike) -> dict:
    """``dreambooth.json`` of an exported arm."""
    return json.loads(Path(folder, ARM_FILE).read_text())


def load_arm(base: Teacher, folder: str | os.PathLike) -> Teacher:
    """``base`` with its U-Net made the arm exported in ``folder`` (in place: the adapter added and loaded,
    or, for ``ft``, every weight replaced), frozen and in eval mode."""
    from safetensors.torch import load_file

    config = DreamBoothConfig(**read_arm(folder)["config"])
    if config.method == "ft":
        base.denoiser.load_state_dict(load_file(str(Path(folder, FULL_WEIGHTS))))
    else:
        load_adapter(base.denoiser, Path(folder, ADAPTER_FILE), config)
    base.denoiser.requires_grad_(False).eval()
    return base
