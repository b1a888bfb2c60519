"""DVC stage `train`: fit a segmentation network on one dataset's train split.

Reads the converted and augmented data and data/split/<dataset>.csv; writes
models/<dataset>/model.pt (weights + model config + class names), the MLflow
run id, metrics/datasets/<dataset>/train.json, the per-epoch history (DVC plots) and
one progress picture per epoch of predictions on fixed validation images.
Every run is logged to MLflow.

``train.processes: N`` (or launching ``torchrun --nproc_per_node N
stages/train.py <dataset>``) trains data-parallel over N processes; process
0 writes every file and the one MLflow run (see ``medseg/distributed.py``).
"""
import contextlib
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medseg import distributed, paths
from medseg.atomic import atomic_dir, atomic_file
from medseg.checkpoint import save_checkpoint
from medseg.cli import run_stage
from medseg.config import Params, TrainConfig
from medseg.dataset import ArraySet, dataset_info, load_training_data
from medseg.distributed import World, threads_per_process
from medseg.tables import read_csv
from medseg.imageio import write_png
from medseg.model import ModelConfig, build_model
from medseg.tracking import Tracker, find_repo_root
from medseg.training import EpochStats, fit, pick_device, seed_everything
from medseg.visualize import caption, grid, overlay

log = logging.getLogger("train")


def data_hash(data: dict[int, tuple[ArraySet, ArraySet]]) -> str:
    """Hash of every array the model(s) saw, train and valid, for each round."""
    digest = hashlib.sha256()
    for train, valid in data.values():
        for arr in (train.images, train.labels, valid.images, valid.labels):
            digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


def params_hash(dataset: str, params: Params) -> str:
    """Hash of every params section that shaped this dataset's model.

    ``evaluate`` is left out: train does not depend on it, so a change there
    re-runs evaluate only, which updates the test metrics of the same run.
    """
    sections = {"dataset": params.dataset(dataset), "augment": params.augment, "split": params.split,
                "train": params.train}
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


def rounds(params: Params) -> list[int]:
    """``[-1]`` for the fixed split, else the cross-validation rounds ``0..k-1``."""
    return list(range(params.split.folds)) if params.split.folds else [-1]


def train_round(r: int, train: ArraySet, valid: ArraySet, cfg: TrainConfig, classes: list[str], channels: int, device,
                tracker: Tracker, progress: Path | None, world: World) -> tuple[dict, dict]:
    """Fit one model; return its best state and a summary. ``r`` is the CV round, -1 without CV."""
    seed_everything(cfg.seed, threads_per_process(cfg.threads, world))
    model = build_model(ModelConfig(**cfg.model.model_dump()), channels, len(classes))
    prefix = f"fold{r}." if r >= 0 else ""

    def on_epoch(stats: EpochStats, pred: torch.Tensor) -> None:
        tracker.log_metrics({prefix + k: v for k, v in stats.as_metrics().items()}, step=stats.epoch)
        if cfg.preview_images and progress is not None:
            write_png(progress / f"{prefix.replace('.', '_')}epoch_{stats.epoch:03d}.png",
                      progress_picture(valid, pred, cfg.preview_images, classes, stats.epoch))

    start = time.perf_counter()
    result = fit(model, train, valid, cfg, classes, device, on_epoch, world)
    summary = {"best_epoch": result.best_epoch, "best_val_dice": round(result.best_dice, 6),
               "epochs_run": len(result.history), "stopped_early": result.stopped_early,
               "train_seconds": round(time.perf_counter() - start, 2), "n_train": len(train), "n_valid": len(valid)}
    history = [{"fold": r, "epoch": st.epoch, **st.as_metrics()} for st in result.history]
    return result.best_state, {**summary, "history": history}


def overall(summaries: dict[int, dict]) -> dict:
    """train.json: the single run, or the mean over cross-validation rounds plus each round."""
    if list(summaries) == [-1]:
        return {k: v for k, v in summaries[-1].items() if k != "history"}
    per_round = {f"fold{r}": {k: v for k, v in s.items() if k != "history"} for r, s in summaries.items()}
    dice = [s["best_val_dice"] for s in summaries.values()]
    return {"folds": len(summaries), "best_val_dice": round(float(np.mean(dice)), 6),
            "best_val_dice_std": round(float(np.std(dice, ddof=1)), 6),
            "epochs_run": sum(s["epochs_run"] for s in summaries.values()),
            "train_seconds": round(sum(s["train_seconds"] for s in summaries.values()), 2), **per_round}


def main(dataset: str, params: Params) -> None:
    """Train a model on one dataset (one per cross-validation round when split.folds > 0)."""
    cfg = params.train
    if cfg.processes > 1 and not distributed.launched():
        distributed.relaunch(cfg.processes, Path(__file__).resolve(), sys.argv[1:])
    with distributed.session(cfg.dist_backend, pick_device(cfg.device)) as (world, device):
        train_dataset(dataset, params, world, device)


def train_dataset(dataset: str, params: Params, world: World, device: torch.device) -> None:
    """Every process trains; process 0 alone logs to MLflow and writes the model and metrics."""
    cfg = params.train
    converted, augmented, split = paths.converted_dir(dataset), paths.augmented_dir(dataset), paths.split_file(dataset)
    info = dataset_info(converted)
    classes, channels = info["classes"], info["channels"]
    data = {r: load_training_data(converted, augmented, split, r) for r in rounds(params)}
    key = {"dataset": dataset, "data_hash": data_hash(data), "params_hash": params_hash(dataset, params)}
    model_cfg = ModelConfig(**cfg.model.model_dump())
    tracker = (Tracker.start(params.mlflow, run_name=dataset, repo_root=find_repo_root(),
                             tags={**key, "device": str(device), "processes": world.size})
               if world.is_main else Tracker.off())
    progress_dir = atomic_dir(paths.progress_dir(dataset)) if world.is_main else contextlib.nullcontext(None)
    with tracker, progress_dir as progress:
        tracker.log_params({"dataset": dataset, "train": cfg.model_dump(), "augment": params.augment.model_dump(),
                            "split": params.split.model_dump(), "n_train": len(data[rounds(params)[0]][0]),
                            "n_valid": len(data[rounds(params)[0]][1])})
        states, summaries = {}, {}
        for r, (train, valid) in data.items():
            states[r], summaries[r] = train_round(r, train, valid, cfg, classes, channels, device, tracker, progress,
                                                  world)
        if not world.is_main:
            return
        size = next(iter(data.values()))[0].images.shape[1:3]
        with atomic_dir(paths.model_dir(dataset)) as model_dir:
            for r, state in states.items():
                extra = {"dataset": dataset, "fold": r, "image_classes": image_classes(converted)}
                facts = {**extra, **{k: v for k, v in summaries[r].items() if k != "history"}}
                save_checkpoint(model_dir / paths.checkpoint_name(r), state, model_cfg, classes, channels, size, facts)
                tracker.log_model_file(model_dir / paths.checkpoint_name(r))
            # Kept with the model so a run-cache restore still knows which run it belongs to.
            run_info = {"run_id": tracker.run_id, "tracking_uri": tracker.uri, **key}
            (model_dir / paths.RUN_INFO).write_text(json.dumps(run_info, indent=2) + "\n")
        summary = {**overall(summaries), "processes": world.size}
        write_history([row for s in summaries.values() for row in s["history"]], paths.metrics_dir(dataset))
        with atomic_file(paths.metrics_dir(dataset) / paths.TRAIN_METRICS) as fh:
            json.dump(summary, fh, indent=2)
        tracker.log_metrics({"best_val_dice": summary["best_val_dice"], "train_seconds": summary["train_seconds"]})
        tracker.log_artifact(progress, "progress")
    log.info("%s: best val dice %.4f (%d epochs, %.0f s)", dataset, summary["best_val_dice"], summary["epochs_run"],
             summary["train_seconds"])


def write_history(rows: list[dict], out: Path) -> None:
    with atomic_file(out / paths.TRAIN_HISTORY, newline="") as fh:
        pd.DataFrame(rows).to_csv(fh, index=False, float_format="%.6g")


if __name__ == "__main__":
    run_stage(main)
