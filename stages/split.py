"""DVC stage ``split``: group-aware train/valid/test assignment (and cross-validation folds).

Reads the converted manifest (originals) and the augmented manifest, writes
``data/split/<dataset>.csv``: one row per sample with its split and fold
(``medseg.data.split``). The file is small and kept in git so a reviewer sees
where each image went.

Usage (from the repository root): ``python stages/split.py <dataset>``
"""
import logging

from medseg.config import Params
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import read_plan
from medseg.data.shards import AugmentedDataset
from medseg.data.split import split_table, write_split
from medseg.io import paths
from medseg.io.cli import run_stage

log = logging.getLogger("split")


def main(dataset: str, params: Params) -> None:
    """Split one dataset by patient group."""
    originals = ConvertedDataset(paths.converted_dir(dataset)).manifest
    augmented = AugmentedDataset(paths.augmented_dir(dataset)).manifest
    table = split_table(originals, augmented, read_plan(dataset, params).split)
    write_split(paths.split_file(dataset), table)
    counts = table[table["split"] != "unused"].groupby(["split", "kind"]).size()
    log.info("%s: %s", dataset, ", ".join(f"{s}/{k}={n}" for (s, k), n in counts.items()))


if __name__ == "__main__":
    run_stage(main)
