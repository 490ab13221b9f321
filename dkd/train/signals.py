"""The stop signals of a training job: SIGTERM and SIGUSR1 (SLURM's preemption, ``scancel`` and
time-limit signals; ``--signal=USR1@<seconds>`` asks for SIGUSR1 ahead of the limit)."""

from __future__ import annotations

import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """While entered, the stop signals are recorded in ``received`` (in order of arrival) instead of
    ending the process, and ``on_signal(signum)`` runs for each; the previous handlers come back on
    exit. Outside the main thread, where Python cannot install handlers, nothing is installed: the
    caller handles signals."""

    def __init__(self, on_signal: Callable[[int], None] | None = None):
        self.received: list[int] = []
        self._on_signal = on_signal
        self._previous = {}

    @property
    def signal(self) -> int | None:
        """The first signal received, or None."""
        return self.received[0] if self.received else None

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.received.append(signum)
        if self._on_signal is not None:
            self._on_signal(signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
