"""Errors a user can act on, and SIGTERM as an exception.

``DataError`` names the file and what is wrong with it; ``StageError`` names
the step and what to change. ``run_stage`` prints either as one line and
exits with status 1. ``Terminated`` is how SIGTERM unwinds a stage (see
``medseg.io.cli``): raised like ``KeyboardInterrupt`` is for Ctrl-C, so
temporary outputs are deleted and an MLflow run is marked KILLED.
"""
from __future__ import annotations

from pathlib import Path
from types import FrameType


class DataError(ValueError):
    """Bad input data. ``str()`` reads ``<path>: <problem>``."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Rebuild from (path, problem) so the error can cross process boundaries.
        return (type(self), (self.path, self.problem))


class StageError(RuntimeError):
    """A stage cannot go on for a reason the user can act on, other than bad data or bad params
    (e.g. the training loss became NaN); the message says where and what to change."""


class Terminated(SystemExit):
    """SIGTERM arrived; exits with the conventional 128 + 15."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that unwinds the stack instead of dying on the spot."""
    raise Terminated(128 + signum)
