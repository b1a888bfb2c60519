"""DVC stage ``train``: fit a segmentation network on one dataset's train split.

Reads the converted and augmented data and ``data/split/<dataset>.csv``;
writes ``models/<dataset>/`` (one checkpoint per round: weights, model
config, classes, training size; and the MLflow run it was logged to),
``metrics/datasets/<dataset>/train.json``, the per-epoch history (DVC
plots) and one progress picture per epoch. Every run is logged to MLflow
(``medseg.train.run``).

``train.processes: N`` (or launching ``torchrun --nproc_per_node N
stages/train.py <dataset>``) trains data-parallel over N processes; process
0 writes every file and the one MLflow run (``medseg.train.distributed``).

Usage (from the repository root): ``python stages/train.py <dataset>``
"""
import logging
import sys
from pathlib import Path

from medseg.config import Params
from medseg.data.plans import read_plan
from medseg.io.cli import run_stage
from medseg.model.runtime import pick_device
from medseg.train import distributed
from medseg.train.run import train_dataset

log = logging.getLogger("train")


def main(dataset: str, params: Params) -> None:
    """Train a model on one dataset (one per cross-validation round when split.folds > 0)."""
    cfg = read_plan(dataset, params).train
    if cfg.processes > 1 and not distributed.launched():
        distributed.relaunch(cfg.processes, Path(__file__).resolve(), sys.argv[1:])
    with distributed.session(cfg.dist_backend, pick_device(cfg.device)) as (world, device):
        summary = train_dataset(dataset, params, world, device)
    if summary is not None:
        log.info("%s: best val dice %.4f (%d epochs, %.0f s)", dataset, summary["best_val_dice"],
                 summary["epochs_run"], summary["train_seconds"])


if __name__ == "__main__":
    run_stage(main)
