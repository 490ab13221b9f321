"""A launcher subprocess (accelerate's, or ``srun`` of node tasks) seen from the job's process:
its output streamed into the job's log as it comes, and the job's signals passed on."""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import subprocess
from collections.abc import Callable
from typing import IO


def forward_signals(proc: subprocess.Popen, received: list[int], forwarded: set, ranks: bool = True) -> None:
    """Send every received signal to each rank (the launcher's children) not sent it yet. Not to the
    launcher: torchrun's agent would kill the ranks 30 s later, maybe before they checkpoint.
    ``ranks=False``: to ``proc`` itself (``srun`` forwards it to the node tasks)."""
    if not received:
        return
    import psutil

    try:
        targets = psutil.Process(proc.pid).children() if ranks else [psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        return
    for rank in targets:
        for signum in received:
            if (rank.pid, signum) not in forwarded:
                forwarded.add((rank.pid, signum))
                with contextlib.suppress(psutil.NoSuchProcess):
                    rank.send_signal(signum)


def stream_output(proc: subprocess.Popen, stream: IO[str], tick: Callable[[], None], keep: int = 20000) -> str:
    """Copy ``proc``'s output to ``stream`` as it comes (progress bars included), calling ``tick``
    at least every half second; returns the output's last ``keep`` characters."""
    decoder, tail, fd = codecs.getincrementaldecoder("utf-8")(errors="replace"), "", proc.stdout.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        tick()
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            stream.write(text)
            stream.flush()
            tail = (tail + text)[-keep:]
        if not chunk:
            proc.stdout.close()
            return tail
