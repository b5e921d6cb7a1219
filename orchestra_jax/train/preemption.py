"""Turn a preemption signal into a flag the training loop checks between steps.

A preempted TPU VM (or a scheduler ending a job) sends SIGTERM and kills the process a short
while later. Doing the save inside the signal handler would run orbax and jax code at an
arbitrary point of a step; instead the handler only records the request and the loop, at its
next step boundary, saves with `force=True`, waits for the write, and exits 0.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class PreemptionGuard:
    """Context manager: while active, SIGTERM (and SIGINT if asked) set `should_stop`.

    The handlers that were installed before are put back on exit. A second SIGINT while a
    stop is already pending raises KeyboardInterrupt, so a person at a terminal can still
    force a stop when the graceful one hangs.
    """

    def __init__(self, *, handle_sigint: bool = False) -> None:
        self._signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)
        if handle_sigint:
            self._signals += (signal.SIGINT,)
        self._stop = threading.Event()
        self._previous: dict[signal.Signals, Any] = {}
        self.received: signal.Signals | None = None

    @property
    def should_stop(self) -> bool:
        """True once a handled signal arrived (or `request_stop` was called)."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask the loop to stop as if a signal had come (e.g. from a time budget check)."""
        self._stop.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        sig = signal.Signals(signum)
        if sig == signal.SIGINT and self._stop.is_set():
            raise KeyboardInterrupt
        self.received = sig
        self._stop.set()

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "PreemptionGuard must be entered on the main thread: Python delivers "
                "signals only there"
            )
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


__all__ = ["PreemptionGuard"]
