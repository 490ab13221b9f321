"""Data-parallel distillation on 2 CPU processes (gloo), as ``accelerate launch`` runs it.

What must hold, and why the reference is not a plain 1-process run: a rank's random numbers
(the generator's noise, the timesteps and noises of both losses) come from its own generator,
seeded ``seed * 1_000_003 + rank``, while a 1-process run draws all its micro-batches from one
generator. So a 2-process run equals, by design, a 1-process run with the same global batch in
which micro-batch ``k`` draws from rank ``k``'s generator (``_OneProcessAsTwoRanks``).

Tolerance: none; the weights must be bit-identical. DDP divides each rank's gradient by 2 and
all-reduces (sums) them: ``g0/2 + g1/2``; accumulation back-propagates ``loss_k / 2`` (every
backward formula is linear in the incoming gradient, so each gradient is exactly ``g_k / 2``)
and sums the two into ``.grad``: the same two float32 numbers added, in an order that does not
matter for two terms. Halving is exact in binary floating point (short of subnormals), and both
sides run the same kernels on one thread each. A tolerance would also hide real faults: Adam is
nearly invariant to the gradient's scale, so a sum in place of a mean changes the weights only
through ``eps`` and clipping, far below any float tolerance one could justify for Adam (which
turns a last-bit difference in a near-zero gradient into an O(lr) step).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch

from dkd.adapters import AdapterSpec
from dkd.backbones import load_teacher
from dkd.backbones.tiny import save_tiny_backbone
from dkd.train import loop as loop_module
from dkd.train.checkpoint import list_checkpoints
from dkd.train.config import DistillConfig
from dkd.train.loop import Distiller, TrainingInterrupted, distill

PROMPTS = [f"a photo of object {i} in colour {c}" for i in range(4) for c in range(4)]
WORLD = 2


def _config(**overrides) -> DistillConfig:
    values = dict(
        backbone="tiny-sd",
        student=AdapterSpec("tiny-sd", "student", "lorad", rank=4),
        fake=AdapterSpec("tiny-sd", "fake", "lorad", rank=2),
        batch_size=4,
        per_device_batch=2,
        max_steps=4,
        checkpoint_every=2,
        keep_checkpoints=3,
        log_every=1,
        seed=7,
    )
    values.update(overrides)
    return DistillConfig(**values)


def _weights(result) -> dict[str, torch.Tensor]:
    return {
        f"{role}.{name}": p.detach().clone()
        for role in ("student", "fake")
        for name, p in getattr(result, role).named_parameters()
        if p.requires_grad
    }


def _worker(rank: int, world: int, port: int, job: dict) -> None:
    """One rank (spawned): the environment ``accelerate launch --cpu`` gives, then the job's runs.
    Records each run's trainable weights and the steps at which this rank wrote a checkpoint."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        ACCELERATE_USE_CPU="true",
        GLOO_SOCKET_IFNAME="lo",
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    root, record, saves = Path(job["root"]), {}, []
    original_save = loop_module.save_checkpoint

    def counted_save(root_dir, step, **kwargs):
        saves.append(step)
        return original_save(root_dir, step, **kwargs)

    loop_module.save_checkpoint = counted_save
    cache = str(root / "embedding-cache")
    if job["mode"] == "first":
        teacher = load_teacher("tiny-sd", job["teacher"])
        record["full"] = _weights(distill(_config(), teacher, PROMPTS, root / "full", progress=False))
        record["full_saves"], saves[:] = list(saves), []
        original_step = Distiller.train_step

        def signalled(self):  # SIGTERM reaches rank 1 only, during step 1
            logs = original_step(self)
            if rank == 1 and self.step == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return logs

        Distiller.train_step = signalled
        try:
            distill(
                _config(embedding_cache=cache),
                load_teacher("tiny-sd", job["teacher"]),
                PROMPTS,
                root / "resumed",
                progress=False,
            )
        except TrainingInterrupted as err:
            record["interrupted"] = str(err)
        Distiller.train_step = original_step
    else:
        result = distill(
            _config(embedding_cache=cache),
            load_teacher("tiny-sd", job["teacher"]),
            PROMPTS,
            root / "resumed",
            progress=False,
        )
        record["resumed"] = _weights(result)
    record["saves"] = saves
    torch.save(record, root / f"{job['mode']}-rank{rank}.pt")


def _launch(job: dict) -> list[dict]:
    """Run ``_worker`` on ``WORLD`` spawned processes (a fresh interpreter each, as a launcher
    starts them); return each rank's record."""
    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port for the gloo rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_worker, args=(WORLD, port, job), nprocs=WORLD, start_method="spawn", join=True)
    return [torch.load(Path(job["root"]) / f"{job['mode']}-rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: 1 thread per process; 2 OpenMP threads on 2 shared cores crawl
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """Launch 1: an uninterrupted 2-process run, then a 2-process run (with an embedding cache
    both ranks fill) that SIGTERM stops on one rank. Launch 2: new processes resume it."""
    root = tmp_path_factory.mktemp("ddp")
    teacher = str(save_tiny_backbone("sd", root / "teacher", seed=5))
    first = _launch({"mode": "first", "root": str(root), "teacher": teacher})
    resumed = _launch({"mode": "resume", "root": str(root), "teacher": teacher})
    return root, teacher, first, resumed


class _OneProcessAsTwoRanks(Distiller):
    """One process, micro-batch ``k`` of every step drawing from the generator that rank ``k`` of
    a 2-process run has (same seeds, same order of draws): the 2-process run's reference."""

    @property
    def generator(self):
        return self._generators[self.current]

    @generator.setter
    def generator(self, first):
        self._generators = [first] + [
            torch.Generator().manual_seed(self.config.seed * 1_000_003 + r) for r in range(1, WORLD)
        ]
        self.current, self.encoded, self.faked = 0, 0, 0

    def encode(self, prompts):  # called first in each generator micro-batch
        self.current, self.encoded = self.encoded % WORLD, self.encoded + 1
        return super().encode(prompts)


def test_ranks_end_with_the_same_weights_and_log_once(runs):
    root, _, first, _ = runs
    a, b = first[0]["full"], first[1]["full"]
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[name], b[name]) for name in a)
    with open(root / "full" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["loss_fake"]) > 0 and float(r["loss_vsd"]) >= 0 for r in rows)


def test_two_processes_match_one_process_accumulating_the_same_micro_batches(runs, tmp_path, monkeypatch):
    _, teacher_folder, first, _ = runs
    teacher = load_teacher("tiny-sd", teacher_folder)
    config = _config(checkpoint_every=100)
    reference = _OneProcessAsTwoRanks(config, teacher, PROMPTS, tmp_path)
    assert reference.accum == WORLD  # the global batch of 4 as 2 micro-batches of 2
    original = loop_module.fake_loss

    def fake_loss(teacher, fake, x0, embeds, uncond, objective, generator):  # the fake update's micro-batch k
        reference.current, reference.faked = reference.faked % WORLD, reference.faked + 1
        return original(teacher, fake, x0, embeds, uncond, objective, reference.generator)

    monkeypatch.setattr(loop_module, "fake_loss", fake_loss)
    expected = _weights(reference.run(progress=False))
    monkeypatch.undo()
    got = first[0]["full"]
    assert expected.keys() == got.keys()
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    # the comparison can fail: a plain 1-process run (one generator for both micro-batches) differs
    plain = _weights(
        distill(config, load_teacher("tiny-sd", teacher_folder), PROMPTS, tmp_path / "plain", progress=False)
    )
    assert max((plain[n] - got[n]).abs().max().item() for n in got) > 1e-4


def test_checkpoints_are_written_once_by_the_main_process(runs):
    root, _, first, _ = runs
    assert [r["full_saves"] for r in first] == [[2, 4], []]
    assert [p.name for p in list_checkpoints(root / "full" / "checkpoints")] == ["step-00000002", "step-00000004"]
    state = json.loads((root / "full" / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert state["processes"] == WORLD and state["step"] == 4
    training = torch.load(root / "full" / "checkpoints" / "step-00000004" / "training_state.pt", weights_only=True)
    generators = [r["generator"] for r in training["rng"]]
    assert len(generators) == WORLD and not torch.equal(generators[0], generators[1])  # one state per rank


def test_a_signal_on_one_rank_stops_both_and_the_resumed_run_is_bit_identical(runs):
    root, _, first, resumed = runs
    # both ranks stopped after the same step, rank 0 because rank 1 got the signal
    assert [r["interrupted"].split("; ")[0] for r in first] == [
        "a signal to another process at step 1",
        f"signal {int(signal.SIGTERM)} at step 1",
    ]
    assert [r["saves"] for r in first] == [[1], []]
    assert [r["saves"] for r in resumed] == [[2, 4], []]
    for rank in range(WORLD):  # resumed from step 1 by new processes, embeddings read from the cache
        full, again = first[rank]["full"], resumed[rank]["resumed"]
        assert all(torch.equal(full[name], again[name]) for name in full), rank
    cache = next((root / "embedding-cache").iterdir())
    assert len(list(cache.glob("*.safetensors"))) == 1  # 16 prompts: one block, written by either rank


def test_one_process_refuses_a_two_process_checkpoint(runs, tmp_path):
    root, teacher_folder, _, _ = runs
    with pytest.raises(ValueError, match="written by 2 processes"):
        distill(_config(), load_teacher("tiny-sd", teacher_folder), PROMPTS, root / "full", progress=False)
