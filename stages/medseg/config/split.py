"""Schema of ``split``: the group-aware train/valid/test split, cross-validation folds, and which train groups
keep their masks (``labelled_fraction``, for semi-supervised training)."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict, YamlSwitch


class AuditConfig(Strict):
    """The leak audit (``medseg.data.audit``): near-duplicate images in different patient groups."""

    duplicates: Annotated[Literal["merge", "refuse", "off"], YamlSwitch] = Field(
        "merge", description="merge: their groups become one (before the split); refuse: stop with an error "
                             "naming both files; off: no audit")
    hash_size: int = Field(16, ge=4, le=32, description="the perceptual hash holds the hash_size x hash_size lowest "
                                                        "DCT frequencies of the image resized to 4 x hash_size "
                                                        "square (imagehash's phash; 8 is its 64-bit default)")
    max_distance: int = Field(24, ge=0, description="Hamming distance (of hash_size^2 bits) at or below which two "
                                                    "images, or one and the other's flip or inversion, count as "
                                                    "duplicates")

    @model_validator(mode="after")
    def _within_the_hash(self) -> AuditConfig:
        if self.max_distance >= self.hash_size ** 2:
            raise ValueError(f"max_distance: must be below the {self.hash_size ** 2} bits of the hash")
        return self


class SplitConfig(Strict):
    valid: float = Field(0.15, ge=0, lt=1, description="fraction of patient groups for validation")
    test: float = Field(0.2, ge=0, lt=1, description="fraction of patient groups for the test set")
    seed: int = 2026
    folds: int = Field(0, ge=0, description="k >= 3: group k-fold cross-validation over all groups; 0 = off")
    test_groups: str | None = Field(None, description="regex: the patient groups it matches are the test set (a "
                                                      "published protocol); valid is drawn from the others")
    predefined: Literal["ignore", "respect"] = Field(
        "ignore", description="the split a dataset was published in (layout.split_folders): ignore it, or "
                              "respect it (a side published without, valid or test, is drawn from the train groups "
                              "at its fraction)")
    predefined_conflict: Literal["move", "refuse"] = Field(
        "move", description="with respect, a patient group published on two sides: move it whole to the side "
                            "holding most of its images (ties: test, then valid, then train), or refuse")
    labelled_fraction: float = Field(
        1.0, gt=0, le=1, description="share of the train patient groups whose masks training uses (at least one "
                                     "group; drawn per fold with cross-validation); the other train groups are "
                                     "unlabelled images for semi-supervised training (train.semi_supervised). 1: all")
    labelled_seed: int = Field(2026, description="seed of the draw of labelled groups alone, so the labelled "
                                                 "part can be redrawn with the same test groups")
    audit: AuditConfig = AuditConfig()

    @field_validator("test_groups")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regex {v!r}: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.valid + self.test >= 1:
            raise ValueError("valid + test must be below 1")
        if self.folds in (1, 2):
            raise ValueError("folds must be 0 (off) or at least 3 (each round needs test, valid and train folds)")
        if self.folds and self.test_groups:
            raise ValueError("test_groups: a fixed test set and cross-validation exclude each other; set folds: 0")
        if self.predefined == "respect" and self.folds:
            raise ValueError("predefined: 'respect' keeps the published split, which cross-validation would "
                             "replace; set folds: 0 or predefined: ignore")
        if self.predefined == "respect" and self.test_groups:
            raise ValueError("predefined: 'respect' takes the test set as published; test_groups would name "
                             "another one. Drop test_groups or set predefined: ignore")
        return self
