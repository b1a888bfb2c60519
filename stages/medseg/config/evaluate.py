"""Schema of ``evaluate``: scoring the test split."""
from __future__ import annotations

from pydantic import Field

from .base import Strict


class EvaluateConfig(Strict):
    combine: dict[str, list[str]] = Field(
        {"mass": ["benign", "malignant"]},
        description="extra scored classes made of several classes; applied to datasets that have all of them")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95% intervals")
    seed: int = 2026
    overlays: int = Field(4, ge=0, le=16, description="best and worst cases shown in the overlay grid")
