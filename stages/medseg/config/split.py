"""Schema of ``split``: the group-aware train/valid/test split and cross-validation folds."""
from __future__ import annotations

from pydantic import Field, model_validator

from .base import Strict


class SplitConfig(Strict):
    valid: float = Field(0.15, ge=0, lt=1, description="fraction of patient groups for validation")
    test: float = Field(0.2, ge=0, lt=1, description="fraction of patient groups for the test set")
    seed: int = 2026
    folds: int = Field(0, ge=0, description="k >= 3: group k-fold cross-validation over all groups; 0 = off")

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.valid + self.test >= 1:
            raise ValueError("valid + test must be below 1")
        if self.folds in (1, 2):
            raise ValueError("folds must be 0 (off) or at least 3 (each round needs test, valid and train folds)")
        return self
