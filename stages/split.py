"""DVC stage `split`: group-aware train/valid/test assignment.

Reads the converted manifest (originals) and the augmented manifest, writes
data/split/<dataset>.csv: one row per sample with its split and fold. The
file is small and kept in git so a reviewer sees where each image went.
"""
import logging

from medseg import paths
from medseg.atomic import atomic_file
from medseg.cli import run_stage
from medseg.config import Params
from medseg.tables import read_csv
from medseg.splitting import split_table

log = logging.getLogger("split")


def main(dataset: str, params: Params) -> None:
    """Split one dataset by patient group."""
    originals = read_csv(paths.converted_dir(dataset) / paths.MANIFEST)
    augmented = read_csv(paths.augmented_dir(dataset) / paths.MANIFEST)
    table = split_table(originals, augmented, params.split)
    with atomic_file(paths.split_file(dataset), newline="") as fh:
        table.to_csv(fh, index=False)
    counts = table[table["split"] != "unused"].groupby(["split", "kind"]).size()
    log.info("%s: %s", dataset, ", ".join(f"{s}/{k}={n}" for (s, k), n in counts.items()))


if __name__ == "__main__":
    run_stage(main)
