"""DVC stage ``augment``: every converted image at the training size, plus seeded variants, as array shards.

Reads ``data/converted/<dataset>/`` and writes ``data/augmented/<dataset>/``:
``shards/part-*.npz``, ``manifest.csv``, ``preview.png`` and ``augment.json``
(``medseg.data.shards``), all at once (a failed run leaves the previous
output in place). Parameters: the plan's ``augment`` (``data/plan/<dataset>.json``).

Usage (from the repository root): ``python stages/augment.py <dataset>``
"""
import logging

from medseg.augment.dataset import augment_dataset
from medseg.config import Params
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import read_plan
from medseg.io import paths
from medseg.io.atomic import atomic_dir
from medseg.io.cli import run_stage

log = logging.getLogger("augment")


def main(dataset: str, params: Params) -> None:
    """Augment a converted dataset into array shards with a preview grid."""
    cfg = read_plan(dataset, params).augment
    converted = ConvertedDataset(paths.converted_dir(dataset))
    log.info("%s: %d sources x %d copies at %s, %d workers", dataset, len(converted.ids), cfg.copies, cfg.size,
             cfg.workers)
    with atomic_dir(paths.augmented_dir(dataset)) as out:
        stats = augment_dataset(converted, cfg, out)
    log.info("%s: wrote %d samples in %d shards to %s", dataset, stats["samples"], stats["shards"],
             paths.augmented_dir(dataset))


if __name__ == "__main__":
    run_stage(main)
