"""The evaluate stage's work: score each round's model on its test images at their native size.

``evaluate_dataset(dataset, params)`` loads each round's checkpoint
(``medseg.data.rounds``), predicts every test image of that round at the
image's own resolution (``medseg.model.inference.predict_native``), scores
it (``medseg.evaluate.scoring``) with its patient group from the split, pools the rows of all rounds into
``eval.json`` (plus ``cv`` with cross-validation), with the dataset's plan
(``medseg.data.plans``) for the folds and the scoring knobs; for a dataset sliced
from CT volumes it also stacks the test slices back into volumes and adds
their 3D scores (``medseg.evaluate.volumes``: ``volumes`` in ``eval.json``,
``per_volume.csv``). It writes the per-image table, the confusion matrices and a picture of the best and worst cases
(``medseg.data.results``), and adds the test results to the training run in
MLflow.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from medseg.config import EvaluateConfig, Params
from medseg.data import results
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import read_plan
from medseg.data.rounds import Round, rounds
from medseg.data.split import read_split
from medseg.data.volumes import has_volumes
from medseg.export.engine import on_engine
from medseg.figures.overlay import caption, grid, overlay, tile
from medseg.io import paths
from medseg.model.checkpoint import load_checkpoint
from medseg.model.inference import predict_native
from medseg.model.runtime import pick_device, seed_everything
from medseg.tracking import record

from .scoring import ImageResult, aggregate, cross_validation, pick_cases, score_image, without_nan
from .volumes import COLUMNS as VOLUME_COLUMNS
from .volumes import aggregate_volumes, score_volumes

log = logging.getLogger(__name__)


def evaluate_round(dataset: str, round_: Round, converted: ConvertedDataset, split: pd.DataFrame,
                   combine: EvaluateConfig, device: torch.device) -> tuple[dict[str, ImageResult], list[str]]:
    """Score the model of ``round_`` on its test images; return the results by id and the model's classes."""
    path = paths.model_dir(dataset) / round_.checkpoint
    ckpt = on_engine(load_checkpoint(path, device), path, combine.engine, device)
    groups = combine.groups(ckpt.classes)
    vocabulary = converted.image_classes
    found = {}
    test = round_.select(split)["test"].set_index("id")["group"]
    for sid in sorted(test.index):
        image, target = converted.read(sid)
        pred = predict_native(ckpt.model, image, ckpt.size, device, ckpt.window, ckpt.postprocess)
        found[sid] = score_image(sid, converted.row(sid)["image_class"], pred, target, ckpt.classes, vocabulary,
                                 groups, group=test[sid])
        for row in found[sid].rows:
            row["fold"] = round_.fold
    return found, ckpt.classes


def overlay_grid(found: dict[str, ImageResult], per_image: pd.DataFrame, converted: ConvertedDataset, n: int,
                 classes: list[str]) -> np.ndarray:
    """Rows of (image, ground truth, prediction) for the ``n`` best and ``n`` worst test images."""
    best, worst = pick_cases(per_image, n)
    dice = per_image.groupby("id")["dice"].mean()
    rows = []
    for tag, ids in (("best", best), ("worst", worst)):
        for sid in ids:
            image, target = converted.read(sid)
            rows.append([caption(tile(overlay(image, np.zeros_like(target))), f"{tag}: {sid}"),
                         caption(tile(overlay(image, target)), "ground truth"),
                         caption(tile(overlay(image, found[sid].pred)), f"prediction, dice {dice[sid]:.3f}")])
    return grid(rows, classes)


def evaluate_dataset(dataset: str, params: Params) -> dict:
    """Evaluate every round's model, write the results and log them; return ``eval.json``."""
    plan = read_plan(dataset, params)
    cfg = plan.evaluate
    seed_everything(cfg.seed, plan.train.threads)
    device = pick_device(plan.train.device)
    converted = ConvertedDataset(paths.converted_dir(dataset))
    split = read_split(paths.split_file(dataset))
    found: dict[str, ImageResult] = {}
    for round_ in rounds(plan.split.folds):
        scored, classes = evaluate_round(dataset, round_, converted, split, cfg, device)
        found.update(scored)
    groups = cfg.groups(classes)
    per_image = pd.DataFrame([row for res in found.values() for row in res.rows])
    metrics = aggregate(per_image, classes, cfg.bootstrap, cfg.seed, groups)
    if plan.split.folds:
        metrics["cv"] = without_nan(cross_validation(per_image, classes, groups))
    per_volume = pd.DataFrame(columns=list(VOLUME_COLUMNS))
    if has_volumes(converted.root):
        folds = {r.id: r.rows[0]["fold"] for r in found.values()}
        per_volume = score_volumes({sid: r.pred for sid, r in found.items()}, folds, converted, classes, groups)
        metrics["volumes"] = aggregate_volumes(per_volume, classes, cfg.bootstrap, cfg.seed, groups)
    picture = overlay_grid(found, per_image, converted, cfg.overlays, classes) if cfg.overlays else None
    images = pd.DataFrame([{"id": r.id, "actual": r.image_class, "predicted": r.rows[0]["predicted_class"]}
                           for r in found.values()])
    pixels = {"classes": classes, "rows_true_cols_pred": sum(r.confusion for r in found.values()).tolist()}
    results.write_evaluation(dataset, metrics, per_image, per_volume, images, pixels, picture)
    record.add_evaluation(params, dataset, metrics)
    return metrics
