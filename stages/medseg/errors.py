"""Errors a user can act on: they name the file (or the step) and what is wrong with it."""
from __future__ import annotations

from pathlib import Path


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
