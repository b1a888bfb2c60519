"""The augment stage's work: every converted image, resized, plus seeded variants, into shards.

``augment_dataset(converted, cfg, out)`` reads the converted dataset
(``medseg.data.converted``), resizes each source to ``cfg.size`` with the
model-input contract (``medseg.data.preprocess``), makes ``cfg.copies``
variants of it with ``medseg.augment.transforms``, and writes the augmented
dataset (``medseg.data.shards``) into ``out``: shards, manifest, a preview
picture and ``augment.json``. Sources are augmented by ``cfg.workers``
processes; the output does not depend on their number.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from medseg.config import AugmentConfig
from medseg.data import shards
from medseg.data.converted import ConvertedDataset, SampleFiles, class_counts
from medseg.data.preprocess import fit_pair
from medseg.io.errors import DataError
from medseg.io.images import write_png
from medseg.io.parallel import ordered_map

from .preview import render_preview
from .transforms import augment_sample, build_transform, sample_seed


@functools.lru_cache(maxsize=4)
def cached_transform(cfg: AugmentConfig, record: bool = False) -> A.Compose:
    """``build_transform(cfg)``, built once per process.

    Building the pipeline costs about as much as one sample. Safe to share
    because ``augment_sample`` resets its random state.
    """
    return build_transform(cfg, record)


def augment_source(source: SampleFiles, cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """All ``cfg.copies`` variants of one source: images (copies, h, w, C), labels (copies, h, w)."""
    image, label = fit_pair(*source.read(), cfg.size)
    transform = cached_transform(cfg)
    height, width = cfg.size
    images = np.empty((cfg.copies, height, width, source.channels), np.uint8)
    labels = np.empty((cfg.copies, height, width), np.uint8)
    for copy in range(cfg.copies):
        images[copy], labels[copy], _ = augment_sample(transform, image, label, sample_seed(cfg.seed, source.id, copy))
    return images, labels


@dataclasses.dataclass(frozen=True)
class _Result:
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    error: tuple[str, str] | None = None  # (path, problem)


def _run_job(job: tuple[SampleFiles, AugmentConfig]) -> _Result:
    try:
        images, labels = augment_source(*job)
    except DataError as exc:
        return _Result(error=(str(exc.path), exc.problem))
    return _Result(images=images, labels=labels)


def iter_augmented(sources: list[SampleFiles], cfg: AugmentConfig,
                   ) -> Iterator[tuple[SampleFiles, np.ndarray, np.ndarray]]:
    """Yield ``(source, images, labels)`` in source order, computed by ``cfg.workers`` processes.

    Raises ``DataError`` for the first bad source, in source order.
    """
    results = ordered_map(_run_job, [(s, cfg) for s in sources], cfg.workers)
    with contextlib.closing(results):
        for source, result in zip(sources, results, strict=True):
            if result.error is not None:
                raise DataError(*result.error)
            yield source, result.images, result.labels


def augment_dataset(converted: ConvertedDataset, cfg: AugmentConfig, out: Path) -> dict[str, Any]:
    """Write shards, manifest, preview and stats for ``converted`` into ``out``; return the stats."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = converted.samples()
    writer = shards.ShardWriter(out, cfg.shard_size)
    pixels, ignored = _write_samples(sources, len(converted.classes), cfg, writer)
    shards.write_manifest(out, writer.rows)
    write_png(out / shards.PREVIEW, render_preview(sources, converted.classes, cfg, cached_transform(cfg, True)))
    stats = {
        "sources": len(sources),
        "copies": cfg.copies,
        "samples": len(writer.rows),
        "shards": len(writer.shards),
        "size": list(cfg.size),
        "channels": converted.channels,
        "classes": converted.classes,
        "class_pixels": dict(zip(converted.classes, pixels.tolist(), strict=True)),
        **({"ignore_pixels": ignored} if converted.ignore else {}),
        "seed": cfg.seed,
        "compressed": shards.COMPRESS,
    }
    shards.write_stats(out, stats)
    return stats


def _write_samples(sources: list[SampleFiles], n_classes: int, cfg: AugmentConfig,
                   writer: shards.ShardWriter) -> tuple[np.ndarray, int]:
    """Augment every source into ``writer``; return the pixel count per class and the ignored pixels."""
    pixels, ignored = np.zeros(n_classes, np.int64), 0
    if cfg.copies == 0:
        return pixels, ignored
    # closing(): after an error here, stop the workers now, not at garbage collection.
    with contextlib.closing(iter_augmented(sources, cfg)) as samples:
        for source, images, labels in samples:
            for copy in range(cfg.copies):
                writer.add(source.id, source.group, source.image_class, copy, images[copy], labels[copy])
            counts, n_ignored = class_counts(labels, n_classes)
            pixels, ignored = pixels + counts, ignored + n_ignored
    writer.flush()
    return pixels, ignored
