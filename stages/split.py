"""DVC stage ``split``: group-aware train/valid/test assignment (and cross-validation folds).

Reads the converted dataset (manifest and images) and the augmented manifest.
The leak audit first hashes every converted image and, as ``split.audit``
says, merges the groups of near-duplicates, refuses them, or is off
(``medseg.data.audit``); it writes ``data/split/<dataset>_audit.json``. Then
``data/split/<dataset>.csv``: one row per sample with its split and fold
(``medseg.data.split``; with ``split.labelled_fraction`` < 1 also whether
its group's masks may train). Both files are small and kept in git so a reviewer
sees where each image went and which groups were joined. With
``split.predefined: respect`` the published split is kept, groups it puts
on two sides moved whole (listed in the audit file and logged) or refused.

Usage (from the repository root): ``python stages/split.py <dataset>``
"""
import logging

from medseg.config import Params
from medseg.data.audit import audit_duplicates, write_audit
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import read_plan
from medseg.data.shards import AugmentedDataset
from medseg.data.split import labelled, predefined_moves, split_table, write_split
from medseg.io import paths
from medseg.io.cli import run_stage

log = logging.getLogger("split")


def main(dataset: str, params: Params) -> None:
    """Split one dataset by patient group, near-duplicates across groups merged first."""
    cfg = read_plan(dataset, params).split
    converted = ConvertedDataset(paths.converted_dir(dataset))
    augmented = AugmentedDataset(paths.augmented_dir(dataset)).manifest
    audit = audit_duplicates(converted, cfg.audit)
    log.info("%s: audit (%s): %d near-duplicate pair(s) across groups, %d group(s) merged into %d; closest pair "
             "of different groups: %s bits", dataset, cfg.audit.duplicates, len(audit.matches), len(audit.merged),
             len(set(audit.merged.values())), audit.closest)
    moves = predefined_moves(converted.manifest, cfg, audit.merged)
    for m in moves:
        log.info("%s: group %s was published on %s; moved whole to %s", dataset, m.group,
                 ", ".join(f"{s} ({len(ids)})" for s, ids in m.sides.items()), m.to)
    table = split_table(converted.manifest, augmented, cfg, audit.merged)
    write_audit(paths.audit_file(dataset), audit, converted.manifest, moves)
    write_split(paths.split_file(dataset), table)
    counts = table[table["split"] != "unused"].groupby(["split", "kind"]).size()
    log.info("%s: %s", dataset, ", ".join(f"{s}/{k}={n}" for (s, k), n in counts.items()))
    if cfg.labelled_fraction < 1:
        groups = table[table["kind"] == "original"].drop_duplicates("group")
        log.info("%s: split.labelled_fraction %g: %d of %d patient groups train without their masks", dataset,
                 cfg.labelled_fraction, int((~labelled(groups)).sum()), len(groups))


if __name__ == "__main__":
    run_stage(main)
