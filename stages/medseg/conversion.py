"""The convert stage's work: raw samples -> canonical images + label maps.

``convert_dataset(raw, out, cfg)`` writes into ``out`` (an empty folder the
caller later moves into place):

- ``images/<id>.png``: 8-bit grey or RGB (``cfg.channels``)
- ``labels/<id>.png``: uint8 class indices in the order of ``cfg.classes``
- ``manifest.csv``: id, group, image_class, image, label, height, width,
  source_image, source_mask, ``px_<class>`` per class
- ``report.json``: classes, counts, skipped files and why, snapped pixels,
  dataset quirks applied

Samples are converted in a process pool; the output does not depend on the
number of workers.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import AulAnnotation, ConvertConfig
from .discover import Sample, discover
from .errors import DataError
from .imageio import display_path, read_image, read_mask, write_png
from .masks import decode_mask, rasterise, read_polygon
from .parallel import ordered_map
from .paths import IMAGES, LABELS, MANIFEST, REPORT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Converted:
    row: dict
    snapped: int
    quirk: str | None = None


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


# --------------------------------------------------------------------------- one sample
def _aul_label(sample: Sample, shape: tuple[int, int], ann: AulAnnotation,
               classes: list[str]) -> tuple[np.ndarray, str | None]:
    number = sample.image.stem
    quirk = None
    liver_file = sample.polygons.get("liver")
    if number in ann.outline_is_liver:
        liver_file, quirk = sample.polygons.get("outline"), f"{sample.id}: liver taken from the outline file"
    liver = read_polygon(liver_file) if liver_file else None
    if liver is None:
        if number not in ann.missing_liver:
            raise DataError(display_path(liver_file or sample.image), "no liver polygon for this image")
        quirk = f"{sample.id}: has no liver polygon (known quirk)"
    polygons = [] if liver is None else [(liver, classes.index(ann.liver_class))]
    mass_file = sample.polygons.get("mass")
    mass_class = ann.mass_classes.get(sample.folder)
    if mass_class is None and mass_file is not None:
        raise DataError(display_path(mass_file),
                        f"mass annotation in folder {sample.folder!r}, which has no mass class")
    if mass_class is not None:
        mass = read_polygon(mass_file) if mass_file else None
        if mass is None:
            raise DataError(display_path(mass_file or sample.image), "no mass polygon for an image of a mass class")
        polygons.append((mass, classes.index(mass_class)))
    return rasterise(shape, polygons), quirk


def _image_class(label: np.ndarray, sample: Sample, cfg: ConvertConfig, counts: np.ndarray) -> str:
    rule = cfg.image_class
    if rule.source == "fixed":
        return rule.value
    if rule.source == "annotation":
        return cfg.annotation.image_classes[sample.folder]
    fg = counts[1:]
    return cfg.classes[1 + int(fg.argmax())] if fg.any() else rule.empty


def convert_sample(sample: Sample, cfg: ConvertConfig, out: Path, raw: Path) -> Converted:
    """Read, decode and write one sample; raise ``DataError`` on any problem."""
    image = read_image(sample.image, cfg.channels, cfg.max_pixels)
    shape = image.shape[:2]
    quirk, snapped = None, 0
    if isinstance(cfg.annotation, AulAnnotation):
        label, quirk = _aul_label(sample, shape, cfg.annotation, cfg.classes)
    else:
        stored = read_mask(sample.mask, cfg.max_pixels)
        if stored.shape != shape:
            raise DataError(display_path(sample.mask), f"mask is {stored.shape[1]}x{stored.shape[0]} but image "
                                                       f"{display_path(sample.image.name)} is {shape[1]}x{shape[0]}")
        decoded = decode_mask(stored, cfg.annotation, cfg.classes, sample.mask)
        label, snapped = decoded.label, decoded.snapped
    counts = np.bincount(label.ravel(), minlength=len(cfg.classes))
    write_png(out / IMAGES / f"{sample.id}.png", image)
    write_png(out / LABELS / f"{sample.id}.png", label)
    row = {
        "id": sample.id,
        "group": sample.group,
        "image_class": _image_class(label, sample, cfg, counts),
        "image": f"{IMAGES}/{sample.id}.png",
        "label": f"{LABELS}/{sample.id}.png",
        "height": shape[0],
        "width": shape[1],
        "source_image": display_path(sample.image.relative_to(raw)),
        "source_mask": display_path(sample.mask.relative_to(raw)) if sample.mask else "",
        **{f"px_{name}": int(c) for name, c in zip(cfg.classes, counts)},
    }
    return Converted(row, snapped, quirk)


def _convert_or_error(args: tuple[Sample, ConvertConfig, Path, Path]) -> Converted | DataError:
    try:
        return convert_sample(*args)
    except DataError as exc:
        return exc


# --------------------------------------------------------------------------- dataset
def convert_dataset(raw: Path, out: Path, cfg: ConvertConfig, workers: int | None = None) -> dict:
    """Convert every sample under ``raw`` into ``out``; return the report."""
    found = discover(raw, cfg)
    problems = list(found.problems)
    (out / IMAGES).mkdir(parents=True)
    (out / LABELS).mkdir()
    jobs = [(s, cfg, out, raw) for s in found.samples]
    results = list(ordered_map(_convert_or_error, jobs, workers or default_workers()))
    done = [r for r in results if isinstance(r, Converted)]
    problems += [r for r in results if isinstance(r, DataError)]
    _handle_problems(problems, cfg, raw, out)
    if not done:
        raise DataError(display_path(raw), "no usable image/mask pairs found (empty dataset)")
    manifest = pd.DataFrame([c.row for c in done]).sort_values("id", kind="stable")
    manifest.to_csv(out / MANIFEST, index=False)
    report = _report(done, problems, found.notes, cfg, manifest)
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _handle_problems(problems: list[DataError], cfg: ConvertConfig, raw: Path, out: Path) -> None:
    if not problems:
        return
    for p in problems:
        log.warning("%s", p)
    if cfg.on_error == "error":
        more = f" (and {len(problems) - 1} more problem(s), listed above)" if len(problems) > 1 else ""
        raise DataError(problems[0].path, problems[0].problem + more)
    # A failing sample raised before writing anything, so skipping leaves no trace.
    log.warning("skipping %d file(s) as params say on_error: skip", len(problems))


def _report(done: list[Converted], problems: list[DataError], notes: list[str], cfg: ConvertConfig,
            manifest: pd.DataFrame) -> dict:
    snapped = {c.row["source_mask"]: c.snapped for c in done if c.snapped}
    return {
        "format": cfg.annotation.format,
        "classes": cfg.classes,
        "channels": cfg.channels,
        "count": len(done),
        "groups": int(manifest["group"].nunique()),
        "image_classes": dict(sorted(Counter(manifest["image_class"]).items())),
        "class_pixels": {name: int(manifest[f"px_{name}"].sum()) for name in cfg.classes},
        "snapped_pixels": int(sum(snapped.values())),
        "snapped_files": snapped,
        "skipped": [{"file": str(p.path), "problem": p.problem} for p in problems],
        "quirks": sorted(c.quirk for c in done if c.quirk),
        "notes": notes,
    }
