"""The training log: one CSV row per logged step, flushed as it is written.

On resume the rows past the resumed step (written by the killed attempt after its last
checkpoint) are dropped, so that the log of a resumed run equals an uninterrupted run's.

TensorBoard scalars are written too when ``tensorboard`` is installed (a dependency of the
package), into ``tensorboard/<CSV name>/`` beside the CSV (``log``, ``curve``: one TensorBoard run
each). A resumed attempt starts its event file with TensorBoard's purge marker at the first step
it trains again (``SummaryWriter(purge_step=...)``): TensorBoard's ``EventAccumulator`` drops the
killed attempt's points from that step on, as the CSV drops its rows (the marker purges every tag
of its folder, hence one folder per CSV). TensorBoard's default (Rust) data server ignores the
marker and treats a step that goes back per tag instead.
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Iterator
from pathlib import Path


class CsvLogger:
    """``resume_after``: the step the run resumes after (rows up to it are kept), or None for a run
    that starts from scratch (every row of an earlier attempt is dropped, step 0 included)."""

    def __init__(self, path: str | Path, resume_after: int | None = None, tensorboard: bool = True):
        self.path = Path(path)
        self.columns: list[str] | None = None
        keep_until = -1 if resume_after is None else resume_after
        if self.path.is_file():
            with self.path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = reader.fieldnames
                rows = [row for row in reader if int(row["step"]) <= keep_until]
            self._rewrite(rows)
        self._tensorboard = (
            _tensorboard_writer(self.path.parent / "tensorboard" / self.path.stem, keep_until + 1)
            if tensorboard
            else None
        )

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def write(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if self.columns is None:
            self.columns = ["step", *sorted(values)]
            self._rewrite([])
        elif set(values) - set(self.columns):  # e.g. the generator's logs on a step that updates it
            with self.path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            self.columns = ["step", *sorted(set(self.columns[1:]) | set(values))]
            self._rewrite(rows)
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore", restval="").writerow(row)
        if self._tensorboard is not None:
            for key, value in values.items():
                self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()

    def close(self) -> None:
        """Close the TensorBoard event file (the CSV is closed after every row)."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


@contextlib.contextmanager
def closing_all(*loggers: CsvLogger | None) -> Iterator[None]:
    """Close every logger that is not None on leaving the block, however it is left."""
    try:
        yield
    finally:
        for logger in loggers:
            if logger is not None:
                logger.close()


def _tensorboard_writer(folder: Path, purge_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    _wait_past_older_event_files(folder)
    return SummaryWriter(str(folder), purge_step=purge_step)


def _wait_past_older_event_files(folder: Path) -> None:
    """Wait, if need be, until the clock's second is past those of the event files already in ``folder``.

    TensorBoard reads a run's event files in name order, ``events.out.tfevents.<second>.<host>.<pid>.<n>``:
    two files of one second are ordered by the process-wide counter ``n`` as text (``10`` before ``9``), so
    an attempt started in the second its predecessor started in could be read first and its purge marker
    lost. Attempts are seconds apart in practice; this makes the order hold always.
    """
    seconds = [int(part[3]) for part in (p.name.split(".") for p in folder.glob("events.out.tfevents.*"))
               if len(part) > 3 and part[3].isdigit()]  # fmt: skip
    wait = max(seconds, default=0) + 1 - time.time()
    if wait > 0:
        time.sleep(wait)
