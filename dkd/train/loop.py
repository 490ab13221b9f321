"""The distillation loop: Algorithm 1 with accumulation, DDP (accelerate), checkpoints and resume.

``Distiller`` builds a run (its trained models and optimisers: ``models.py``), trains it step by
step and checkpoints it (saving and resuming: ``resume.py``); ``distill`` runs or resumes one.

A run writes into ``output_dir``: ``checkpoints/step-*/`` (see ``checkpoint.py``), ``log.csv``
(one row per ``log_every`` steps) and ``config.json``. Started again with the same
``output_dir`` it resumes from the latest checkpoint; on CPU the result is bit-identical to an
uninterrupted run. SIGTERM and SIGUSR1 (SLURM preemption and time limits) make it save a
checkpoint after the current step and raise ``TrainingInterrupted`` (on every process, if one
got the signal). With ``embedding_cache`` the prompts' text-encoder states are read from (and
first written to) a disk cache shared by runs and processes (``embeddings.py``). Each checkpoint
records the training cost so far (``checkpoint.training_cost``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.profiler import record_function

from ..backbones import PromptEmbeds, Teacher
from ..data.prompts import step_batch
from ..io import atomic_write_text
from .checkpoint import latest_checkpoint, save_checkpoint
from .config import DistillConfig
from .embeddings import EmbeddingCache
from .logger import CsvLogger, closing_all
from .models import ROLES, build_optimizer, build_role, run_fingerprint
from .resume import CheckpointedRun
from .signals import StopSignals
from .speed import tune_for_speed
from .step import fake_loss, frozen, generate, generator_loss

_clock = time.perf_counter  # the clock of the training-cost record (tests replace it)


class TrainingInterrupted(RuntimeError):
    """A signal asked the run to stop; a checkpoint of the last finished step was written."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class DistillResult:
    output_dir: Path
    steps: int
    checkpoint: Path
    student: nn.Module
    fake: nn.Module


class Distiller(CheckpointedRun):
    """State of one run: the three models, two optimisers, the generator and the prompt order."""

    def __init__(
        self,
        config: DistillConfig,
        teacher: Teacher,
        prompts: Sequence[str],
        output_dir,
        accelerator=None,
        scorer: nn.Module | None = None,
    ):
        from accelerate import Accelerator

        self.config, self.teacher, self.prompts = config, teacher, prompts
        if config.objective.scored and scorer is None:
            raise ValueError(
                f"objective {config.objective.name!r} has the clamped CLIP loss (clip_weight): it needs an "
                "image-text scorer (dkd.train.scorers.load_scorer)."
            )
        self.scorer = scorer if config.objective.scored else None
        self.output_dir = Path(output_dir)
        self.acc = accelerator or Accelerator(mixed_precision=config.mixed_precision)
        if teacher.denoiser.dtype in (torch.bfloat16, torch.float16) and config.mixed_precision == "no":
            raise ValueError(
                f"the teacher is in {teacher.denoiser.dtype}: set mixed_precision to 'bf16' or 'fp16' "
                "(or load the teacher in float32)."
            )
        self.steps_per_epoch = len(prompts) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(prompts)} prompts are fewer than one batch of {config.batch_size}.")
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        self.accum = config.accumulation_steps(self.acc.num_processes)
        for module in (m for m in (teacher.denoiser, teacher.text_encoder) if m is not None):
            module.to(self.acc.device)
        init = None
        if config.student_init is not None:
            from ..backbones import load_denoiser

            init = load_denoiser(config.backbone, config.student_init, dtype=teacher.denoiser.dtype)
        torch.manual_seed(config.seed)  # adapter initialisation (B Xavier) depends on the run's seed only
        models = {
            role: build_role(teacher, getattr(config, role), init if role == "student" else None) for role in ROLES
        }
        for model in models.values() if config.gradient_checkpointing else ():
            model.enable_gradient_checkpointing()
        tune_for_speed(
            [teacher.denoiser, *models.values()],
            channels_last=config.channels_last,
            compile_blocks=config.compile_blocks,
        )
        if self.acc.device.type == "cuda":  # TF32 for the float32 matmuls and convolutions left under autocast
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        optims = {role: build_optimizer(models[role], getattr(config, f"optim_{role}")) for role in ROLES}
        prepared = self.acc.prepare(*models.values(), *(o for o, _ in optims.values()))
        self.models = dict(zip(ROLES, prepared[:2]))
        self.optims = dict(zip(ROLES, prepared[2:]))
        self.scheds = {role: optims[role][1] for role in ROLES}
        self.generator = torch.Generator(device=self.acc.device).manual_seed(
            config.seed * 1_000_003 + self.acc.process_index
        )
        self.uncond = teacher.encode([""]).to(self.acc.device)
        if self.scorer is not None:
            self.scorer.to(self.acc.device)
        self.cache = EmbeddingCache(config.embedding_cache, teacher, prompts) if config.embedding_cache else None
        self.fingerprint = run_fingerprint(config, teacher, self.scorer)
        self.step = 0
        self.attempts: list[dict] = []  # the training cost of earlier attempts (from the checkpoint)
        self._attempt: dict | None = None  # this attempt's, while ``run`` trains
        self._timer = [0.0, 0.0]  # the attempt's start on ``_clock`` and its seconds not counted

    # -- the checkpoints' clock and writer (for ``resume.CheckpointedRun``) -------------------
    def _now(self) -> float:
        """The training-cost clock: ``_clock``, looked up here at call time (tests replace it)."""
        return _clock()

    def _write_checkpoint(self, *args, **kwargs) -> Path:
        """``checkpoint.save_checkpoint``, looked up here at call time (tests replace it)."""
        return save_checkpoint(*args, **kwargs)

    # -- one step ----------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> PromptEmbeds:
        """The prompts' text-encoder states: through the embedding cache if the run has one."""
        return (self.cache if self.cache is not None else self.teacher).encode(prompts)

    def _micro_batches(self, step: int, stream: int = 0) -> list[list[str]]:
        """This process's micro-batches of step ``step``: a fixed shuffled order per epoch (``stream`` 1:
        the fake model's fresh prompts, an independent order)."""
        batch = step_batch(len(self.prompts), self.config.batch_size, seed=self.config.seed, step=step, stream=stream)
        per_process = self.config.batch_size // self.acc.num_processes
        mine = batch[self.acc.process_index * per_process : (self.acc.process_index + 1) * per_process]
        size = self.config.per_device_batch
        return [[self.prompts[int(i)] for i in mine[k : k + size]] for k in range(0, len(mine), size)]

    def _update(self, role: str, losses: list, logs: dict) -> None:
        model, opt = self.models[role], self.optims[role]
        for k, loss in enumerate(losses):
            sync = contextlib.nullcontext() if k == len(losses) - 1 else self.acc.no_sync(model)
            with sync:
                value = loss() / len(losses)
                with record_function(f"dkd.backward_{role}"):
                    self.acc.backward(value)
        params = [p for p in model.parameters() if p.requires_grad]
        with record_function(f"dkd.clip_{role}"):  # waits for the backward pass (the norm is read)
            max_norm = getattr(self.config, f"optim_{role}").grad_clip
            norm = float(self.acc.clip_grad_norm_(params, math.inf if max_norm is None else max_norm))
        if not math.isfinite(norm):  # the same on every process: gradients are all-reduced
            what = "loss" if bool(self._nonfinite_loss.get(role, False)) else "gradient"
            raise NonFiniteLossError(
                f"non-finite {'generator' if role == 'student' else 'fake'} {what} at step {self.step + 1}; no "
                f"update was applied; the last good checkpoint is {latest_checkpoint(self.checkpoint_root) or 'none'}."
            )
        logs[f"grad_norm_{role}"] = norm
        with record_function(f"dkd.optimizer_{role}"):
            opt.step()
        self.scheds[role].step()
        opt.zero_grad(set_to_none=True)
        logs[f"lr_{role}"] = self.scheds[role].get_last_lr()[0]

    def _record_finite(self, role: str, loss: torch.Tensor) -> None:
        """Note whether a loss is non-finite (a tensor, read only if the update's gradient norm is
        not finite: no wait for the GPU); the run stops at the (all-reduced) gradient-norm check of
        the update, so that every process stops at the same point."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._nonfinite_loss[role] = bad if role not in self._nonfinite_loss else self._nonfinite_loss[role] | bad

    def train_step(self) -> dict[str, torch.Tensor]:
        """One iteration over one global batch: the generator's update (every ``generator_every``
        steps) and the fake model's, in the objective's order; the fake trains on the generator
        phase's detached samples (``fake_batch: shared``, Algorithm 1) or on its own (``fresh``).
        Returns the step's metrics as 0-d tensors (``float`` them to read; ``run`` does so only for
        logged steps)."""
        objective = self.config.objective
        update_generator = self.step % self.config.generator_every == 0
        shared = objective.fake_batch == "shared"
        logs: dict[str, list] = {}
        self._nonfinite_loss: dict[str, torch.Tensor] = {}
        samples: list[tuple[torch.Tensor, PromptEmbeds]] = []

        def generator_phase():
            kept = samples if shared else []
            micro = [self._generator_micro(p, update_generator, kept, logs) for p in self._micro_batches(self.step)]
            if update_generator:  # SiD's loss reaches through the fake model: its parameters frozen meanwhile
                fake = self.acc.unwrap_model(self.models["fake"])
                with frozen(fake) if objective.keeps_graph else contextlib.nullcontext():
                    self._update("student", micro, logs)
            elif shared:  # no update, but the fake model needs this step's samples
                with torch.no_grad():
                    for run in micro:
                        run()

        def fake_phase():
            if not shared:
                with torch.no_grad():
                    for prompts in self._micro_batches(self.step, stream=1):
                        self._generator_micro(prompts, False, samples, logs)()
            self._update("fake", [self._fake_micro(x0, e, logs) for x0, e in samples], logs)

        for phase in (
            (fake_phase, generator_phase) if objective.order == "fake_first" else (generator_phase, fake_phase)
        ):
            phase()
        return {
            k: (
                torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in v]).mean()
                if isinstance(v, list)
                else torch.as_tensor(v)
            )
            for k, v in logs.items()
        }

    def _generator_micro(self, prompts: list[str], with_loss: bool, samples: list, logs: dict) -> Callable:
        """One micro-batch of the generator: G's samples (kept, detached, in ``samples``) and, if
        ``with_loss``, the generator loss to backpropagate."""
        teacher, objective, device = self.teacher, self.config.objective, self.acc.device
        # SiD's loss runs through the fake model: its unwrapped module (frozen by train_step)
        fake = self.acc.unwrap_model(self.models["fake"]) if objective.keeps_graph else self.models["fake"]

        def run():
            with record_function("dkd.encode_prompts"):
                embeds = self.encode(prompts).to(device)
            noise = torch.randn(len(prompts), *teacher.latent_shape, generator=self.generator, device=device)
            with self.acc.autocast():
                with record_function("dkd.generate"):
                    x0 = generate(
                        teacher, self.models["student"], noise, embeds, objective.t_init, objective.scaled_input
                    )
                samples.append((x0.detach(), embeds))
                if not with_loss:
                    return None
                with record_function("dkd.score_real_fake"):
                    uncond = self.uncond.repeat(len(prompts))
                    loss, step_logs = generator_loss(
                        teacher,
                        fake,
                        x0,
                        embeds,
                        uncond,
                        objective,
                        self.generator,
                        scorer=self.scorer,
                        prompts=prompts,
                        clip_weight=objective.clip_weight_at(self.step, self.total_steps),
                    )
            self._record_finite("student", loss)
            _accumulate(logs, step_logs)
            return loss

        return run

    def _fake_micro(self, x0: torch.Tensor, embeds: PromptEmbeds, logs: dict) -> Callable:
        """One micro-batch of the fake model's loss on G's detached samples ``x0``."""

        def run():
            with self.acc.autocast(), record_function("dkd.fake_forward"):
                uncond = self.uncond.repeat(len(embeds))
                loss, step_logs = fake_loss(
                    self.teacher, self.models["fake"], x0, embeds, uncond, self.config.objective, self.generator
                )
            self._record_finite("fake", loss)
            _accumulate(logs, step_logs)
            return loss

        return run

    def _agreed(self, flag: bool) -> bool:
        """True on every process if it is true on any (a signal may reach the ranks at different steps)."""
        if self.acc.num_processes == 1:
            return flag
        return bool(self.acc.reduce(torch.tensor([float(flag)], device=self.acc.device), reduction="sum").item() > 0)

    # -- the run -----------------------------------------------------------------------------
    def _evaluate(self, evaluate: Callable | None, curve: CsvLogger | None, done: bool) -> None:
        """The evaluation hook, on the main process, at step 0 and every ``eval_every`` steps (and at
        the end): ``evaluate(step, student)`` returns metrics, one row of ``curve.csv``. The hook
        must not draw from the run's generator (the run stays bit-identical with or without it)."""
        every = self.config.eval_every
        if evaluate is None or every is None or not (self.step % every == 0 or done):
            return
        if curve is not None:
            student = self.acc.unwrap_model(self.models["student"])
            was_training = student.training
            with torch.no_grad():
                values = evaluate(self.step, student.eval())
            student.train(was_training)
            curve.write(self.step, values)
        self.acc.wait_for_everyone()

    def run(self, progress: bool = True, evaluate: Callable | None = None) -> DistillResult:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.resume()
        if self.acc.is_main_process:
            record = {**self.config.to_dict(), "fingerprint": self.fingerprint}
            atomic_write_text(self.output_dir / "config.json", json.dumps(record, indent=2))
        resume_after = self.step or None  # None: from scratch, an earlier attempt's step-0 curve row is dropped too
        logger = CsvLogger(self.output_dir / "log.csv", resume_after) if self.acc.is_main_process else None
        curve = (
            CsvLogger(self.output_dir / "curve.csv", resume_after)
            if self.acc.is_main_process and evaluate is not None
            else None
        )
        with closing_all(logger, curve):
            return self._train(progress, evaluate, logger, curve)

    def _train(
        self, progress: bool, evaluate: Callable | None, logger: CsvLogger | None, curve: CsvLogger | None
    ) -> DistillResult:
        from tqdm.auto import tqdm

        if self.step == 0:
            self._evaluate(evaluate, curve, done=False)
        self._start_attempt()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not progress or not self.acc.is_main_process,
            desc="distill",
        )
        checkpoint, latest = None, {}
        with StopSignals() as stop:
            while self.step < self.total_steps:
                start = time.perf_counter()
                latest.update(self.train_step())  # a row holds each metric's latest value (the generator's
                self.step += 1  # come from its last update when generator_every > 1)
                bar.update(1)
                done = self.step == self.total_steps
                stopping = self._agreed(stop.signal is not None)
                if logger and (self.step % self.config.log_every == 0 or done):
                    logs = {key: float(value) for key, value in latest.items()}
                    logs["samples_per_s"] = self.config.batch_size / (time.perf_counter() - start)
                    if torch.cuda.is_available():
                        logs["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
                    logger.write(self.step, logs)
                    bar.set_postfix(loss_fake=f"{logs.get('loss_fake', math.nan):.4f}")
                hook_start = _clock()
                self._evaluate(evaluate, curve, done)
                self._timer[1] += _clock() - hook_start
                if done or self.step % self.config.checkpoint_every == 0 or stopping:
                    checkpoint = self.save()
                if stopping and not done:
                    source = f"signal {stop.signal}" if stop.signal is not None else "a signal to another process"
                    raise TrainingInterrupted(f"{source} at step {self.step}; checkpoint {checkpoint}")
        bar.close()
        self._attempt = None
        checkpoint = checkpoint or latest_checkpoint(self.checkpoint_root)
        return DistillResult(
            self.output_dir, self.step, checkpoint, *(self.acc.unwrap_model(self.models[r]) for r in ROLES)
        )


def _accumulate(logs: dict, new: dict) -> None:
    for key, value in new.items():
        logs.setdefault(key, []).append(value)


def distill(
    config: DistillConfig,
    teacher: Teacher,
    prompts: Sequence[str],
    output_dir,
    *,
    progress: bool = True,
    accelerator=None,
    evaluate: Callable | None = None,
    scorer: nn.Module | None = None,
) -> DistillResult:
    """Run (or resume) one distillation; see ``Distiller``. ``evaluate(step, student) -> dict``: the
    optional evaluation hook, every ``config.eval_every`` steps, logged to ``curve.csv``; ``scorer``: the
    image-text scorer of an objective with the clamped CLIP loss (``dkd.train.scorers``)."""
    distiller = Distiller(config, teacher, prompts, output_dir, accelerator, scorer=scorer)
    return distiller.run(progress=progress, evaluate=evaluate)
