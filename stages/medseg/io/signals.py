"""Ctrl-C and SIGTERM held back across a few instructions that must not be split.

``defer_stops()`` swaps the Python handlers of SIGINT and SIGTERM for one
that only records the signal; ``release()`` puts the handlers back and
raises what was recorded, so it unwinds from there as it would have.

Why not ``pthread_sigmask`` alone: it blocks a signal for the calling thread
only. A stage has other threads (OpenBLAS, OpenMP, a pool's manager), and
the kernel hands a signal sent to the process to one of them; its C handler
marks the signal, and Python runs the handler in the main thread at its next
bytecode, masked or not. A SIGTERM sent just after ``tempfile.mkdtemp``
made its directory raised inside ``mkdtemp``, before the caller held the
path it had to delete, and the directory stayed (1 run in 60 on two busy
cores).
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], object] | int | None


class DeferredStops:
    """Recording, not acting on, Ctrl-C and SIGTERM until ``release()``."""

    def __init__(self) -> None:
        self.caught: list[int] = []
        self._previous: dict[int, Handler] = {}
        # Python handlers run in the main thread only, and only it may set them: elsewhere there is
        # nothing to defer, a stop cannot raise in this thread.
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        except BaseException:  # a stop ran its own handler between two swaps: put the first one back
            self._restore()
            raise

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if signum not in self.caught:
            self.caught.append(signum)

    def _restore(self) -> None:
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def release(self) -> None:
        """Restore the handlers, then take each stop that came meanwhile as they say (once; later calls do
        nothing)."""
        self._restore()
        caught, self.caught = self.caught, []
        for signum in caught:
            signal.raise_signal(signum)


def defer_stops() -> DeferredStops:
    return DeferredStops()
