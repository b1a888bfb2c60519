"""The convert stage's work: raw samples -> canonical images + label maps.

``convert_dataset(raw, out, cfg)`` discovers the samples
(``medseg.formats.discover``), decodes each annotation (``masks``,
``aul``, or the drawn instances of ``coco``, ``labelme`` and ``cvat`` through
``instances``) and writes a converted dataset (``medseg.data.converted``) into
``out``, an empty folder the caller later moves into place. Its
``report.json`` holds the classes and channels, counts per image class and
class, skipped files and why, snapped pixels (and outliers, those snapped
from beyond the tolerance), how many mask files each image had (several
are merged), images scaled to 8 bits, the dataset quirks applied, and for
the instance formats how many regions were filled and which images had
none (``unannotated: background``).

Samples are converted in a process pool; the output does not depend on the
number of workers.
"""
from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from medseg.config import AulAnnotation, ConvertConfig
from medseg.data import converted
from medseg.io.errors import DataError
from medseg.io.images import display_path, read_image_scaled, read_mask
from medseg.io.parallel import ordered_map

from .aul import aul_label
from .discover import discover
from .instances import label_map
from .masks import Decoded, decode_mask, merge_masks
from .samples import Sample

R = TypeVar("R")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Converted:
    row: dict
    snapped: int
    quirk: str | None = None
    mask_files: int = 0  # folder layouts: the masks merged into this label map
    scaled: bool = False  # an image of more than 8 bits, brought to 8 by the bit_depth rule
    outliers: int = 0  # snapped pixels that were beyond the tolerance (annotation.max_outlier_fraction)
    instances: int = 0  # formats of drawn instances: the regions filled into this label map


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


# --------------------------------------------------------------------------- one sample
def _image_class(label: np.ndarray, sample: Sample, cfg: ConvertConfig, counts: np.ndarray) -> str:
    rule = cfg.image_class
    if rule.source == "fixed":
        return rule.value
    if rule.source == "annotation":
        return cfg.annotation.image_classes[sample.folder]
    if sample.image_class:  # folder, regex or csv: known at discovery
        return sample.image_class
    fg = counts[1:]
    return cfg.classes[1 + int(fg.argmax())] if fg.any() else rule.empty


def _decode(path: Path, sample: Sample, shape: tuple[int, int], cfg: ConvertConfig) -> Decoded:
    stored = read_mask(path, cfg.max_pixels)
    if stored.shape != shape:
        raise DataError(display_path(path), f"mask is {stored.shape[1]}x{stored.shape[0]} but image "
                                            f"{display_path(sample.image.name)} is {shape[1]}x{shape[0]}")
    return decode_mask(stored, cfg.annotation, cfg.classes, path, cfg.ignore)


def _instances_label(sample: Sample, shape: tuple[int, int], cfg: ConvertConfig) -> np.ndarray:
    if sample.declared_size is not None and sample.declared_size != (shape[1], shape[0]):
        w, h = sample.declared_size
        raise DataError(display_path(sample.annotation), f"image {display_path(sample.image.name)} is declared "
                                                         f"{w}x{h} here but the file is {shape[1]}x{shape[0]}")
    return label_map(sample.instances, shape, cfg.annotation.overlap, sample.annotation)


def convert_sample(sample: Sample, cfg: ConvertConfig, out: Path, raw: Path) -> Converted:
    """Read, decode and write one sample; raise ``DataError`` on any problem."""
    image, scaled = read_image_scaled(sample.image, cfg.channels, cfg.max_pixels, cfg.bit_depth.rule,
                                      data=sample.image_data)
    shape = image.shape[:2]
    quirk, snapped, outliers = None, 0, 0
    if isinstance(cfg.annotation, AulAnnotation):
        label, quirk = aul_label(sample, shape, cfg.annotation, cfg.classes)
    elif cfg.is_instances:
        label = _instances_label(sample, shape, cfg)
    else:
        decoded = merge_masks([(_decode(path, sample, shape, cfg), path) for path in sample.masks], cfg.classes)
        label, snapped, outliers = decoded.label, decoded.snapped, decoded.outliers
    counts, ignored = converted.class_counts(label, len(cfg.classes))
    converted.write_sample(out, sample.id, image, label)
    row = converted.manifest_row(
        sample.id, sample.group, _image_class(label, sample, cfg, counts), shape,
        source_image=display_path(sample.image.relative_to(raw)),
        source_mask=";".join(display_path(m.relative_to(raw)) for m in (*sample.masks, *_annotation(sample))),
        pixels=counts, classes=cfg.classes, published_split=sample.published_split,
        ignored=ignored if cfg.ignore is not None else None)
    return Converted(row, snapped, quirk, len(sample.masks), scaled, outliers, len(sample.instances))


def _annotation(sample: Sample) -> tuple[Path, ...]:
    return (sample.annotation,) if sample.annotation is not None else ()


def _result_or_error(convert: Callable[..., R], args: tuple) -> R | DataError:
    try:
        return convert(*args)
    except DataError as exc:
        return exc


def convert_all(convert: Callable[..., R], jobs: list[tuple], workers: int | None) -> tuple[list[R], list[DataError]]:
    """``convert(*job)`` for every job, in a process pool, in job order: the results, and the ``DataError``s
    that jobs raised instead (a bad file stops its own job, not the others)."""
    results = list(ordered_map(functools.partial(_result_or_error, convert), jobs, workers or default_workers()))
    return ([r for r in results if not isinstance(r, DataError)], [r for r in results if isinstance(r, DataError)])


# --------------------------------------------------------------------------- dataset
def convert_dataset(raw: Path, out: Path, cfg: ConvertConfig, workers: int | None = None) -> dict:
    """Convert every sample under ``raw`` into ``out``; return the report."""
    found = discover(raw, cfg)
    problems = list(found.problems)
    converted.create(out)
    jobs = [(s, cfg, out, raw) for s in found.samples]
    done, failed = convert_all(convert_sample, jobs, workers)
    problems += failed
    handle_problems(problems, cfg.on_error)
    if not done:
        raise DataError(display_path(raw), "no usable image/mask pairs found (empty dataset)")
    manifest = converted.write_manifest(out, [c.row for c in done])
    report = _report(done, problems, found.notes, cfg, manifest)
    converted.write_report(out, report)
    return report


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


def _report(done: list[Converted], problems: list[DataError], notes: list[str], cfg: ConvertConfig,
            manifest: pd.DataFrame) -> dict:
    snapped = {c.row["source_mask"]: c.snapped for c in done if c.snapped}
    outliers = {c.row["source_mask"]: c.outliers for c in done if c.outliers}
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
        "outlier_pixels": int(sum(outliers.values())),
        "outlier_files": outliers,
        "masks_per_image": {str(n): k for n, k in sorted(Counter(c.mask_files for c in done if c.mask_files).items())},
        "bit_depth": {"rule": cfg.bit_depth.rule, "scaled_images": sum(c.scaled for c in done)},
        "several_masks": {c.row["source_image"]: c.mask_files for c in done if c.mask_files > 1},
        "instances": sum(c.instances for c in done),
        "unannotated_images": sorted(c.row["id"] for c in done if cfg.is_instances and not c.instances),
        "skipped": [{"file": str(p.path), "problem": p.problem} for p in problems],
        "quirks": sorted(c.quirk for c in done if c.quirk),
        "notes": notes,
        **_ignore_report(cfg, manifest),
    }


def _ignore_report(cfg: ConvertConfig, manifest: pd.DataFrame) -> dict:
    """With an ignore label: its value in the label maps, its pixels, and the images that have some."""
    if cfg.ignore is None:
        return {}
    per_image = manifest.set_index("id")[converted.IGNORE_COLUMN]
    return {"ignore_label": converted.IGNORE, "ignore": cfg.ignore.model_dump(exclude_unset=True),
            "ignore_pixels": int(per_image.sum()),
            "ignore_images": {sid: int(n) for sid, n in per_image.items() if n}}
