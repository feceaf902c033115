"""SIGTERM during training (a scheduler's preemption, ``kill``, the end of a job's time): an exception instead of
the silent default death, so the run's ``finally`` blocks run - the run lock is released - and the command can say
where to resume.

Reference: torch elastic / SLURM send SIGTERM before SIGKILL; Lightning's and fast-reid's trainers stop on it.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["TrainingInterrupted", "stop_on_sigterm"]


class TrainingInterrupted(BaseException):
    """The process received ``signum`` while training. A BaseException, like KeyboardInterrupt, so no ``except
    Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")


def _raise(signum: int, frame) -> None:
    raise TrainingInterrupted(signum)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`TrainingInterrupted` (the previous handler comes back on exit).
    Off the main thread, where Python cannot install handlers, the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
