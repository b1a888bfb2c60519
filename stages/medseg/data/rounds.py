"""Rounds: the fixed split, or the rounds of k-fold cross-validation (``split.folds: k``).

Train fits one model per round and evaluate scores each on its own test
images. A ``Round`` knows everything that differs between rounds: which rows
of the split table it trains, validates and tests on (``select``), the name
of its checkpoint in ``models/<name>/``, the prefix of its metric names in
MLflow and of its progress pictures, and its value in the ``fold`` column of
``train_history.csv`` and ``per_image.csv`` (-1 for the fixed split).

In round ``r`` of ``k``, fold ``r`` is the test set, fold ``r+1 (mod k)``
the validation set and the other folds train, so every image is tested
exactly once by a model that neither saw it nor used it for model selection.
Train rows whose masks the split withholds (``split.labelled_fraction``) are
the round's ``unlabelled`` images.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from medseg.io.errors import DataError

from .split import labelled

CHECKPOINT = "model.pt"
FIXED_FOLD = -1  # the ``fold`` column's value for the fixed split


@dataclass(frozen=True)
class Round:
    """The fixed split (``index`` None) or cross-validation round ``index``."""

    index: int | None = None

    @classmethod
    def from_fold(cls, fold: int) -> Round:
        """The round a ``fold`` column value stands for."""
        return cls(None if fold == FIXED_FOLD else fold)

    @property
    def fold(self) -> int:
        """The value of the ``fold`` column in history and per-image tables."""
        return FIXED_FOLD if self.index is None else self.index

    @property
    def key(self) -> str:
        """``fold<r>`` (its section in ``train.json``); empty for the fixed split."""
        return "" if self.index is None else f"fold{self.index}"

    @property
    def prefix(self) -> str:
        """Prefix of this round's metric names in MLflow: ``fold<r>.``, empty for the fixed split."""
        return f"{self.key}." if self.key else ""

    @property
    def checkpoint(self) -> str:
        """File name of this round's model: ``model.pt``, or ``model_fold<r>.pt``."""
        return CHECKPOINT if self.index is None else f"model_{self.key}.pt"

    def picture(self, epoch: int) -> str:
        """File name of this round's progress picture after ``epoch``."""
        return (f"{self.key}_" if self.key else "") + f"epoch_{epoch:03d}.png"

    def select(self, split: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Rows of the split table for ``train`` (originals + augmented whose masks training uses),
        ``unlabelled`` (the round's other train rows: images only), ``valid`` and ``test`` (originals)."""
        original = split["kind"] == "original"
        if self.index is None:
            train = split["split"] == "train"
            valid, test = (split["split"] == "valid") & original, (split["split"] == "test") & original
        else:
            folds = split["fold"].astype(int)
            k = int(folds.max()) + 1
            if not 0 <= self.index < k:
                raise DataError("split.csv", f"cross-validation round {self.index} does not exist "
                                             f"(k = {k}; see split.folds)")
            train = (folds != self.index) & (folds != (self.index + 1) % k)
            valid, test = (folds == (self.index + 1) % k) & original, (folds == self.index) & original
        masks = labelled(split)
        return {"train": split[train & masks], "unlabelled": split[train & ~masks],
                "valid": split[valid], "test": split[test]}


def rounds(folds: int) -> list[Round]:
    """The fixed split for ``folds == 0``, else the rounds ``0..folds-1``."""
    return [Round(r) for r in range(folds)] if folds else [Round()]
