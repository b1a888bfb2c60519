"""A raw sample as discovery finds it, the ids derived from file names, and what a bad sample does (``on_error``)."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from medseg.io.errors import DataError

log = logging.getLogger(__name__)
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


@dataclass
class Discovery:
    samples: list[Sample]
    problems: list[DataError]
    notes: list[str]  # harmless findings worth a line in the report (unpaired masks, ...)


def safe_id(stem: str) -> str:
    """Make a file name stem usable as an output name (spaces, brackets, odd bytes)."""
    text = stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _SAFE.sub("_", text).strip("_") or "image"


def handle_problems(problems: list[DataError], on_error: str) -> None:
    """Log every problem; with ``on_error: error`` raise the first (counting the others), else go on without them."""
    if not problems:
        return
    for p in problems:
        log.warning("%s", p)
    if on_error == "error":
        more = f" (and {len(problems) - 1} more problem(s), listed above)" if len(problems) > 1 else ""
        raise DataError(problems[0].path, problems[0].problem + more)
    # A failing sample raised before writing anything, so skipping leaves no trace.
    log.warning("skipping %d file(s) as params say on_error: skip", len(problems))
