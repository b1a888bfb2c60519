"""DVC stage `train`: fit a segmentation network on one dataset's train split.

Reads the converted and augmented data and data/split/<dataset>.csv; writes
models/<dataset>/model.pt (weights + model config + class names), the MLflow
run id, metrics/<dataset>/train.json, the per-epoch history (DVC plots) and
one progress picture per epoch of predictions on fixed validation images.
Every run is logged to MLflow.
"""
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medseg import paths
from medseg.atomic import atomic_dir, atomic_file
from medseg.checkpoint import save_checkpoint
from medseg.cli import run_stage
from medseg.config import Params
from medseg.dataset import ArraySet, dataset_info, load_training_data, read_csv
from medseg.imageio import write_png
from medseg.model import ModelConfig, build_model
from medseg.tracking import Tracker, find_repo_root
from medseg.training import EpochStats, fit, pick_device, seed_everything
from medseg.visualize import caption, grid, overlay

log = logging.getLogger("train")


def data_hash(train: ArraySet, valid: ArraySet) -> str:
    digest = hashlib.sha256()
    for arr in (train.images, train.labels, valid.images, valid.labels):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


def params_hash(dataset: str, params: Params) -> str:
    """Hash of every params section that shaped this dataset's model and results."""
    sections = {"dataset": params.dataset(dataset), "augment": params.augment, "split": params.split,
                "train": params.train, "evaluate": params.evaluate}
    used = {name: section.model_dump(mode="json") for name, section in sections.items()}
    return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()[:16]


def progress_picture(valid: ArraySet, pred: torch.Tensor, n: int, classes: list[str], epoch: int) -> np.ndarray:
    rows = []
    for i in range(min(n, len(valid))):
        image = valid.images[i]
        rows.append([caption(overlay(image, np.zeros_like(valid.labels[i])), valid.ids[i]),
                     caption(overlay(image, valid.labels[i]), "ground truth"),
                     caption(overlay(image, pred[i].numpy().astype(np.uint8)), f"epoch {epoch}")])
    return grid(rows, classes)


def image_classes(converted: Path) -> list[str]:
    """Image-level class names, stored so ``predict`` can name a finding."""
    return sorted(read_csv(converted / paths.MANIFEST)["image_class"].unique())


def main(dataset: str, params: Params) -> None:
    """Train a model on one dataset."""
    cfg = params.train
    seed_everything(cfg.seed, cfg.threads)
    converted, out_metrics = paths.converted_dir(dataset), paths.metrics_dir(dataset)
    info = dataset_info(converted)
    classes, channels = info["classes"], info["channels"]
    train, valid = load_training_data(converted, paths.augmented_dir(dataset), paths.split_file(dataset), cfg.fold)
    model_cfg = ModelConfig(**cfg.model.model_dump())
    model = build_model(model_cfg, channels, len(classes))
    device = pick_device(cfg.device)
    key = {"dataset": dataset, "data_hash": data_hash(train, valid), "params_hash": params_hash(dataset, params)}
    tags = {**key, "device": str(device)}

    with Tracker.start(params.mlflow, run_name=dataset, tags=tags, repo_root=find_repo_root()) as tracker, \
            atomic_dir(paths.progress_dir(dataset)) as progress:
        tracker.log_params({"dataset": dataset, "train": cfg.model_dump(), "augment": params.augment.model_dump(),
                            "split": params.split.model_dump(), "n_train": len(train), "n_valid": len(valid)})

        def on_epoch(stats: EpochStats, pred: torch.Tensor) -> None:
            tracker.log_metrics(stats.as_metrics(), step=stats.epoch)
            if cfg.preview_images:
                write_png(progress / f"epoch_{stats.epoch:03d}.png",
                          progress_picture(valid, pred, cfg.preview_images, classes, stats.epoch))

        start = time.perf_counter()
        result = fit(model, train, valid, cfg, classes, device, on_epoch)
        summary = {"best_epoch": result.best_epoch, "best_val_dice": round(result.best_dice, 6),
                   "epochs_run": len(result.history), "stopped_early": result.stopped_early,
                   "train_seconds": round(time.perf_counter() - start, 2), "n_train": len(train),
                   "n_valid": len(valid)}
        with atomic_dir(paths.model_dir(dataset)) as model_dir:
            save_checkpoint(model_dir / paths.CHECKPOINT, result.best_state, model_cfg, classes, channels,
                            train.images.shape[1:3], {"dataset": dataset, "image_classes": image_classes(converted),
                                                      **summary})
            # Kept with the model so a run-cache restore still knows which run it belongs to.
            run_info = {"run_id": tracker.run_id, "tracking_uri": tracker.uri, **key}
            (model_dir / paths.RUN_INFO).write_text(json.dumps(run_info, indent=2) + "\n")
            tracker.log_model_file(model_dir / paths.CHECKPOINT)
        write_history(result.history, out_metrics)
        with atomic_file(out_metrics / paths.TRAIN_METRICS) as fh:
            json.dump(summary, fh, indent=2)
        tracker.log_metrics({"best_val_dice": result.best_dice, "train_seconds": summary["train_seconds"]})
        tracker.log_artifact(progress, "progress")
    log.info("%s: best val dice %.4f at epoch %d (%d epochs, %.0f s)", dataset, result.best_dice,
             result.best_epoch, len(result.history), summary["train_seconds"])


def write_history(history: list[EpochStats], out: Path) -> None:
    rows = [{"epoch": s.epoch, **s.as_metrics()} for s in history]
    with atomic_file(out / paths.TRAIN_HISTORY, newline="") as fh:
        pd.DataFrame(rows).to_csv(fh, index=False, float_format="%.6g")


if __name__ == "__main__":
    run_stage(main)
