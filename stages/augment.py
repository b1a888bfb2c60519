"""Stage ``augment``: seeded augmented copies of a converted dataset, as array shards.

Reads ``data/converted/<dataset>/`` (manifest, image and label PNGs, report)
and writes ``data/augmented/<dataset>/``: ``shards/part-*.npz``,
``manifest.csv``, ``preview.png`` and ``augment.json``, all at once (a
failed run leaves the previous output in place). Parameters: ``augment``.

Usage (from the repository root): ``python stages/augment.py <dataset>``
"""
from __future__ import annotations

import logging

from medseg import paths
from medseg.atomic import atomic_dir
from medseg.augmentation import augment_dataset, load_sources
from medseg.cli import run_stage
from medseg.config import Params

log = logging.getLogger("medseg.augment")


def main(dataset: str, params: Params) -> None:
    """Augment a converted dataset into array shards with a preview grid."""
    cfg = params.augment
    sources = load_sources(paths.converted_dir(dataset))
    log.info("%s: %d sources x %d copies at %s, %d workers",
             dataset, len(sources.sources), cfg.copies, cfg.size, cfg.workers)
    with atomic_dir(paths.augmented_dir(dataset)) as out:
        stats = augment_dataset(sources, cfg, out)
    log.info("%s: wrote %d samples in %d shards to %s",
             dataset, stats["samples"], stats["shards"], paths.augmented_dir(dataset))


if __name__ == "__main__":
    run_stage(main)
