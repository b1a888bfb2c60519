"""What every section of the schema shares: strict, frozen models and the error type."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """``params.yaml`` is malformed; the message names the key."""


class Strict(BaseModel):
    """Unknown keys are errors (a typo never passes silently); values cannot change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)
