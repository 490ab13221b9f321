"""The training log (``dkd.train.logger``): CSV rows and TensorBoard scalars across attempts, the
scalars read back with TensorBoard's own reader (``EventAccumulator``, which applies the purge
markers as TensorBoard's UI does)."""

from __future__ import annotations

import csv
from pathlib import Path

from dkd.train.logger import CsvLogger, closing_all


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of one TensorBoard run folder, by tag: (step, value) in file order."""
    # imported here: tests/train/test_cuda_train.py imports test_loop, which imports this helper,
    # on GPU machines that may lack tensorboard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def csv_rows(path: Path) -> list[tuple[int, float]]:
    with open(path, newline="") as handle:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle)]


def attempt(path: Path, resume_after: int | None, steps: range, scale: float, close: bool = True) -> None:
    """One attempt writing loss = scale x step; ``close=False``: killed (the writer is never closed)."""
    logger = CsvLogger(path, resume_after=resume_after)
    for step in steps:
        logger.write(step, {"loss": scale * step})
    if close:
        logger.close()


def test_a_resumed_attempt_replaces_the_killed_attempts_rows_and_scalars(tmp_path):
    """Attempt 1 logs steps 1-5 and is killed; its last checkpoint was step 3. Attempt 2 resumes at
    step 3 and logs steps 4-6 with other values: the CSV and TensorBoard both hold steps 1-3 of
    attempt 1 and 4-6 of attempt 2, each step once."""
    path = tmp_path / "log.csv"
    attempt(path, None, range(1, 6), 1.0, close=False)
    attempt(path, 3, range(4, 7), 10.0)
    expected = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
    assert csv_rows(path) == expected
    assert tensorboard_scalars(tmp_path / "tensorboard" / "log") == {"loss": expected}


def test_a_restart_from_scratch_drops_everything_the_killed_attempt_logged(tmp_path):
    path = tmp_path / "log.csv"
    attempt(path, None, range(0, 3), 1.0, close=False)  # killed before its first checkpoint (a step-0 row:
    attempt(path, None, range(0, 4), 7.0)  # the evaluation curve's, before training)
    assert csv_rows(path) == [(0, 0.0), (1, 7.0), (2, 14.0), (3, 21.0)]
    assert tensorboard_scalars(tmp_path / "tensorboard" / "log") == {"loss": [(0, 0.0), (1, 7.0), (2, 14.0), (3, 21.0)]}


def test_each_csv_is_its_own_tensorboard_run_and_closing_all_closes_them(tmp_path):
    """Two logs of one run folder (the training log and the evaluation curve): a resume marker in
    one must not purge the other's points, so each has its own folder under tensorboard/."""
    log, curve = CsvLogger(tmp_path / "log.csv", resume_after=2), CsvLogger(tmp_path / "curve.csv", resume_after=2)
    with closing_all(log, curve, None):
        log.write(3, {"loss": 0.5})
        curve.write(4, {"fid": 12.0})
    assert log._tensorboard is None and curve._tensorboard is None
    assert tensorboard_scalars(tmp_path / "tensorboard" / "log") == {"loss": [(3, 0.5)]}
    assert tensorboard_scalars(tmp_path / "tensorboard" / "curve") == {"fid": [(4, 12.0)]}


def test_without_tensorboard_only_the_csv_is_written(tmp_path):
    logger = CsvLogger(tmp_path / "log.csv", tensorboard=False)
    logger.write(1, {"loss": 2.0})
    logger.close()
    assert csv_rows(tmp_path / "log.csv") == [(1, 2.0)] and not (tmp_path / "tensorboard").exists()


def test_a_new_event_file_sorts_after_the_older_ones(tmp_path):
    """TensorBoard reads event files in name order: a second attempt within the second of the first
    (its process-wide counter at 10 after 9, sorting first as text) waits for the next second."""
    import time

    folder = tmp_path / "tensorboard" / "log"
    folder.mkdir(parents=True)
    older = folder / f"events.out.tfevents.{int(time.time())}.zzz.1.9"  # sorts after this host's, same second
    older.write_bytes(b"")
    logger = CsvLogger(tmp_path / "log.csv")
    logger.write(1, {"loss": 1.0})
    logger.close()
    (newer,) = [p for p in folder.iterdir() if p != older]
    assert sorted([newer.name, older.name])[-1] == newer.name
