"""The train stage's work: one model per round, its checkpoint, history, summary and MLflow run.

``train_dataset(dataset, params, world, device)`` runs with the dataset's
plan (``medseg.data.plans``: ``train`` with every ``auto`` filled in, and the
folds of ``split``), loads every round's data
(``medseg.data.rounds``: the fixed split, or each cross-validation round),
fits a model per round (``medseg.train.loop``; with the round's unlabelled
train images when ``train.semi_supervised`` is on), and in process 0 writes
``models/<name>/`` and the training metrics (``medseg.data.results``) and
logs one MLflow run (``medseg.tracking.record`` says what it holds). A
checkpoint of a dataset sliced from CT volumes keeps convert's ``volume``
settings in its ``info``, so predict slices a new volume as convert did. Each
epoch's predictions on a few fixed validation images become a progress
picture, so a person can watch the model learn.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from medseg.config import Params, TrainConfig
from medseg.data import results
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import read_plan
from medseg.data.rounds import Round, rounds
from medseg.data.shards import AugmentedDataset
from medseg.figures.overlay import caption, grid, overlay
from medseg.io import paths
from medseg.io.atomic import atomic_dir
from medseg.io.images import write_png
from medseg.model.checkpoint import save_checkpoint
from medseg.model.factory import build_model
from medseg.model.runtime import seed_everything
from medseg.tracking import record
from medseg.tracking.run import Tracker

from .datasets import ArraySet, load_training_data, load_unlabelled
from .distributed import World, threads_per_process
from .loop import EpochStats, FitResult, fit

log = logging.getLogger(__name__)


class RoundData(NamedTuple):
    """What a round trains on: labelled ``train``, ``valid``, and the ``unlabelled`` train images."""

    train: ArraySet
    valid: ArraySet
    unlabelled: ArraySet

    def seen(self, cfg: TrainConfig) -> list[np.ndarray]:
        """The arrays the round's model sees (for the run key): the unlabelled images only when a method uses them."""
        used = [self.unlabelled.images] if cfg.semi_supervised.method != "off" else []
        return [self.train.images, self.train.labels, self.valid.images, self.valid.labels, *used]


def progress_picture(valid: ArraySet, pred: torch.Tensor, n: int, classes: list[str], epoch: int) -> np.ndarray:
    """Rows of (image, ground truth, prediction) for the first ``n`` validation images."""
    rows = []
    for i in range(min(n, len(valid))):
        image = valid.images[i]
        rows.append([caption(overlay(image, np.zeros_like(valid.labels[i])), valid.ids[i]),
                     caption(overlay(image, valid.labels[i]), "ground truth"),
                     caption(overlay(image, pred[i].numpy().astype(np.uint8)), f"epoch {epoch}")])
    return grid(rows, classes)


def train_round(round_: Round, data: RoundData, cfg: TrainConfig, classes: list[str],
                channels: int, device: torch.device, tracker: Tracker, progress: Path | None,
                world: World, groups: dict[str, list[int]]) -> tuple[FitResult, dict, list[dict]]:
    """Fit one model; return its result, its summary and its history rows."""
    train, valid = data.train, data.valid
    seed_everything(cfg.seed, threads_per_process(cfg.threads, world))
    model = build_model(cfg.model, channels, len(classes))

    def on_epoch(stats: EpochStats, pred: torch.Tensor) -> None:
        record.log_epoch(tracker, round_, stats.epoch, stats.as_metrics())
        if cfg.preview_images and progress is not None:
            write_png(progress / round_.picture(stats.epoch),
                      progress_picture(valid, pred, cfg.preview_images, classes, stats.epoch))

    start = time.perf_counter()
    result = fit(model, train, valid, cfg, classes, device, on_epoch, world, groups, data.unlabelled)
    summary = {"best_epoch": result.best_epoch, "best_val_dice": round(result.best_dice, 6),
               "val_dice_postprocessed": round(max(result.postprocess_dice.values()), 6),
               "postprocess": result.postprocess.to_dict(),
               "epochs_run": len(result.history), "stopped_early": result.stopped_early,
               "train_seconds": round(time.perf_counter() - start, 2), "n_train": len(train), "n_valid": len(valid),
               "n_unlabelled": len(data.unlabelled), "runtime": result.runtime}
    tracker.set_tags({f"runtime.{name}": result.runtime[name]
                      for name in ("precision", "channels_last", "chosen_by", "machine")})
    history = [{"fold": round_.fold, "epoch": st.epoch, **st.as_metrics()} for st in result.history]
    return result, summary, history


def volume_facts(converted: ConvertedDataset) -> dict:
    """For a dataset sliced from CT volumes, convert's ``volume`` settings (HU window, spacing, 2.5D), which
    predict applies to a new volume; nothing otherwise."""
    return {"volume": converted.report["volume"]} if "volume" in converted.report else {}


def window_of(cfg: TrainConfig, size: tuple[int, int]) -> tuple[int, int] | None:
    """The sliding window inference needs: the patch, when it is smaller than the canvas."""
    patch = cfg.patch_size
    return None if patch is None or tuple(patch) == tuple(size) else tuple(patch)


def summarise_rounds(summaries: dict[Round, dict]) -> dict:
    """``train.json``: the fixed split's summary, or the mean over cross-validation rounds plus each round."""
    if list(summaries) == [Round()]:
        return dict(summaries[Round()])
    dice = [s["best_val_dice"] for s in summaries.values()]
    return {"folds": len(summaries), "best_val_dice": round(float(np.mean(dice)), 6),
            "best_val_dice_std": round(float(np.std(dice, ddof=1)), 6),
            "epochs_run": sum(s["epochs_run"] for s in summaries.values()),
            "train_seconds": round(sum(s["train_seconds"] for s in summaries.values()), 2),
            **{r.key: s for r, s in summaries.items()}}


def train_dataset(dataset: str, params: Params, world: World, device: torch.device) -> dict | None:
    """Train every round; process 0 logs to MLflow, writes the model and metrics and returns ``train.json``."""
    plan = read_plan(dataset, params)
    cfg = plan.train
    converted = ConvertedDataset(paths.converted_dir(dataset))
    augmented = AugmentedDataset(paths.augmented_dir(dataset))
    groups = plan.evaluate.groups(converted.classes)
    data = {r: RoundData(*load_training_data(converted, augmented, paths.split_file(dataset), r),
                         load_unlabelled(converted, augmented, paths.split_file(dataset), r))
            for r in rounds(plan.split.folds)}
    seen = [array for d in data.values() for array in d.seen(cfg)]
    key = {"dataset": dataset, "data_hash": record.data_hash(seen),
           "params_hash": record.params_hash(dataset, params, plan)}
    tracker = (record.start_training_run(params, dataset, key, device, world.size) if world.is_main
               else Tracker.off())
    progress_dir = atomic_dir(paths.progress_dir(dataset)) if world.is_main else contextlib.nullcontext(None)
    with tracker, progress_dir as progress:
        first = next(iter(data.values()))
        tracker.log_params(record.run_params(dataset, params, plan, len(first.train), len(first.valid),
                                             len(first.unlabelled)))
        fitted, summaries, history = {}, {}, []
        for r, round_data in data.items():
            fitted[r], summaries[r], rows = train_round(r, round_data, cfg, converted.classes, converted.channels,
                                                        device, tracker, progress, world, groups)
            history += rows
        if not world.is_main:
            return None
        with atomic_dir(paths.model_dir(dataset)) as model_dir:
            for r, result in fitted.items():
                facts = {"dataset": dataset, "fold": r.fold, "image_classes": converted.image_classes,
                         **volume_facts(converted), **summaries[r]}
                save_checkpoint(model_dir / r.checkpoint, result.best_state, cfg.model, converted.classes,
                                converted.channels, augmented.size, facts, window_of(cfg, augmented.size),
                                result.postprocess)
                record.log_checkpoint(tracker, model_dir / r.checkpoint)
            # Kept with the model so a run-cache restore still knows which run it belongs to.
            results.write_run_info(model_dir, {"run_id": tracker.run_id, "tracking_uri": tracker.uri, **key})
        summary = {**summarise_rounds(summaries), "processes": world.size}
        results.write_training(dataset, summary, history)
        record.log_training_summary(tracker, summary, progress)
    return summary
