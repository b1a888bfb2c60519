"""A raw sample as discovery finds it, and the ids derived from file names."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from medseg.io.errors import DataError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Sample:
    id: str  # file-system safe, unique within the dataset
    group: str  # patient / source id; a group never crosses splits
    image: Path
    masks: tuple[Path, ...] = ()  # folder layout: one, or several to merge
    polygons: dict[str, Path] = field(default_factory=dict)  # AUL: outline/liver/mass -> JSON
    folder: str = ""  # class folder (AUL, or layout.class_folders)
    image_class: str = ""  # when known from the name or metadata (medseg.formats.image_class)
    published_split: str = ""  # train, valid or test when the dataset comes split (layout.split_folders)
    # Formats of drawn instances (medseg.formats.instances): the file that holds this image's annotation, the
    # instances read from it, the size it declares (width, height), and an image embedded in it (LabelMe).
    annotation: Path | None = None
    instances: tuple = ()
    declared_size: tuple[int, int] | None = None
    image_data: bytes | None = None


@dataclass
class Discovery:
    samples: list[Sample]
    problems: list[DataError]
    notes: list[str]  # harmless findings worth a line in the report (unpaired masks, ...)


def safe_id(stem: str) -> str:
    """Make a file name stem usable as an output name (spaces, brackets, odd bytes)."""
    text = stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _SAFE.sub("_", text).strip("_") or "image"
