"""A run's checkpoints: saving, resuming, and the training-cost record they carry.

:class:`CheckpointedRun` is the checkpoint side of a trainer (a mixin of ``loop.Distiller`` and of
``dkd.downstream.dreambooth.train.DreamBoothTrainer``): ``save`` writes the trained models (one
``<name>.safetensors`` per entry of the host's ``models``: the distiller's "student" and "fake"),
optimisers, schedulers, every process's random state and the cost record under
``<output_dir>/checkpoints`` (layout in ``checkpoint.py``); ``resume`` loads the latest one, if it
belongs to the same run (the host's ``fingerprint``, e.g. :func:`models.run_fingerprint`) and was
written by as many processes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_trainable_state,
    rng_state,
    set_rng_state,
    trainable_state,
)

_log = logging.getLogger(__name__)


class CheckpointedRun:
    """Checkpoints of a trainer. Its host provides the run's state (``config`` with ``keep_checkpoints``,
    ``acc``, ``output_dir``, ``models``, ``optims`` and ``scheds``: dicts keyed by the same model names,
    ``generator``, ``step``, ``total_steps``,
    ``fingerprint``, and the cost record's ``attempts``, ``_attempt``, ``_timer``) and two methods:
    ``_now()``, the clock of the training-cost record, and ``_write_checkpoint(...)``, which writes
    one (``checkpoint.save_checkpoint``); ``loop.Distiller``'s look up ``loop._clock`` and
    ``loop.save_checkpoint`` at call time, where tests replace them."""

    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def save(self) -> Path:
        from accelerate.utils import gather_object

        rng = gather_object([rng_state(self.generator)])
        path = None
        if self.acc.is_main_process:
            path = self._write_checkpoint(
                self.checkpoint_root,
                self.step,
                weights={name: trainable_state(self.acc.unwrap_model(m)) for name, m in self.models.items()},
                training_state={
                    "optimizers": {name: o.state_dict() for name, o in self.optims.items()},
                    "schedulers": {name: s.state_dict() for name, s in self.scheds.items()},
                    "rng": rng,
                    "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
                },
                state={
                    "total_steps": self.total_steps,
                    "processes": self.acc.num_processes,
                    "fingerprint": self.fingerprint,
                    "attempts": self._cost_record(),
                },
                keep=self.config.keep_checkpoints,
            )
        self.acc.wait_for_everyone()
        return path or latest_checkpoint(self.checkpoint_root)

    def _cost_record(self) -> list[dict]:
        """Earlier attempts and this one, its seconds counted up to now (evaluation hook excluded)."""
        if self._attempt is None:
            return list(self.attempts)
        seconds, device = self._now() - self._timer[0] - self._timer[1], self.acc.device  # + peak GPU memory (Table 4)
        memory = {"peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30} if device.type == "cuda" else {}
        return [
            *self.attempts,
            {**self._attempt, **memory, "seconds": seconds, "steps": [self._attempt["steps"][0], self.step]},
        ]

    def _start_attempt(self) -> None:
        """Start this attempt's cost record: the devices of all processes (one collective call)."""
        from accelerate.utils import gather_object

        device = self.acc.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        names = gather_object([name]) if self.acc.num_processes > 1 else [name]
        self._attempt = {
            "device": ", ".join(sorted(set(names))),
            "processes": self.acc.num_processes,
            "steps": [self.step, self.step],
        }
        self._timer = [self._now(), 0.0]

    def check_fingerprint(self, path: Path, state: dict) -> None:
        """Refuse a checkpoint of another run (``state`` is its ``state.json``)."""
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{path} belongs to a run with other settings or another teacher (fingerprint "
                f"{state.get('fingerprint')} != {self.fingerprint}); use a new output folder or remove "
                f"{self.checkpoint_root}."
            )

    def resume(self) -> bool:
        """Load the latest checkpoint, if any; say in the log where this attempt starts."""
        path = latest_checkpoint(self.checkpoint_root)
        if path is None:
            if self.acc.is_main_process:
                _log.info("no checkpoint in %s: training starts at step 0", self.checkpoint_root)
            return False
        names = list(self.models)
        weights, training_state, state = load_checkpoint(path, names)
        self.check_fingerprint(path, state)
        if state["processes"] != self.acc.num_processes:
            raise ValueError(
                f"{path} was written by {state['processes']} processes; resume with as many "
                f"(this run has {self.acc.num_processes})."
            )
        for name in names:
            load_trainable_state(self.acc.unwrap_model(self.models[name]), weights[name])
            self.optims[name].load_state_dict(training_state["optimizers"][name])
            self.scheds[name].load_state_dict(training_state["schedulers"][name])
        set_rng_state(self.generator, training_state["rng"][self.acc.process_index])
        if self.acc.scaler is not None and training_state.get("scaler"):
            self.acc.scaler.load_state_dict(training_state["scaler"])
        self.step = state["step"]
        self.attempts = list(state.get("attempts", []))
        if self.acc.is_main_process:
            _log.info("resuming from %s at step %d of %d", path, self.step, self.total_steps)
        return True
