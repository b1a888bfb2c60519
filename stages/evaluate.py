"""DVC stage `evaluate`: score the trained model on the test split.

Predictions are made at the training size and resized back to each image's
native resolution before scoring. Writes metrics/datasets/<dataset>/eval.json (stable
keys for `dvc metrics diff`), a per-image CSV, the image-level and pixel
confusion matrices, and an overlay grid of the best and worst cases; the
final metrics are logged into the training run in MLflow.
"""
import json
import logging

import numpy as np
import pandas as pd

from medseg import paths
from medseg.atomic import atomic_file
from medseg.checkpoint import load_checkpoint
from medseg.cli import run_stage
from medseg.config import Params
from medseg.dataset import select
from medseg.tables import read_csv, read_json
from medseg.evaluation import (ImageResult, without_nan, aggregate, applicable_groups, pick_cases, predict_native,
                               score_image, tile)
from medseg.imageio import encode_png, read_png
from medseg.tracking import Tracker, find_repo_root, numeric_metrics
from medseg.training import pick_device, seed_everything
from medseg.visualize import caption, grid, overlay

log = logging.getLogger("evaluate")


def overlay_grid(results: dict[str, ImageResult], per_image: pd.DataFrame, converted, manifest: pd.DataFrame,
                 n: int, classes) -> np.ndarray:
    best, worst = pick_cases(per_image, n)
    dice = per_image.groupby("id")["dice"].mean()
    rows = []
    for tag, ids in (("best", best), ("worst", worst)):
        for sid in ids:
            image = read_png(converted / manifest.loc[sid, "image"])
            target = read_png(converted / manifest.loc[sid, "label"])
            rows.append([caption(tile(overlay(image, np.zeros_like(target))), f"{tag}: {sid}"),
                         caption(tile(overlay(image, target)), "ground truth"),
                         caption(tile(overlay(image, results[sid].pred)), f"prediction, dice {dice[sid]:.3f}")])
    return grid(rows, classes)


def write_outputs(dataset: str, metrics: dict, per_image: pd.DataFrame, results: dict[str, ImageResult],
                  picture: np.ndarray | None, classes: list[str]) -> None:
    out = paths.metrics_dir(dataset)
    with atomic_file(out / paths.EVAL_METRICS) as fh:
        json.dump(metrics, fh, indent=2)
    with atomic_file(out / paths.PER_IMAGE, newline="") as fh:
        per_image.to_csv(fh, index=False, float_format="%.6g")
    images = pd.DataFrame([{"id": r.id, "actual": r.image_class, "predicted": r.rows[0]["predicted_class"]}
                           for r in results.values()])
    with atomic_file(out / paths.IMAGE_CONFUSION, newline="") as fh:
        images.to_csv(fh, index=False)
    pixels = sum(r.confusion for r in results.values())
    with atomic_file(out / paths.PIXEL_CONFUSION) as fh:
        json.dump({"classes": classes, "rows_true_cols_pred": pixels.tolist()}, fh, indent=2)
    if picture is not None:
        with atomic_file(out / paths.OVERLAYS, "wb") as fh:
            fh.write(encode_png(picture))


def evaluate_round(dataset: str, r: int, device, groups_cfg: dict, manifest: pd.DataFrame,
                   vocabulary: list[str]) -> tuple[dict[str, ImageResult], list[str]]:
    """Score the model of round ``r`` (-1: the fixed split) on its test images."""
    ckpt = load_checkpoint(paths.model_dir(dataset) / paths.checkpoint_name(r), device)
    groups = applicable_groups(groups_cfg, ckpt.classes)
    converted, results = paths.converted_dir(dataset), {}
    for sid in sorted(select(read_csv(paths.split_file(dataset)), r)["test"]["id"]):
        row = manifest.loc[sid]
        image, target = read_png(converted / row["image"]), read_png(converted / row["label"])
        pred = predict_native(ckpt.model, image, ckpt.size, device)
        results[sid] = score_image(sid, row["image_class"], pred, target, ckpt.classes, vocabulary, groups)
        for scored in results[sid].rows:
            scored["fold"] = r
    return results, ckpt.classes


def cross_validation(per_image: pd.DataFrame, classes: list[str], groups: dict) -> dict:
    """Mean and std across rounds of each round's mean Dice per class (and mean foreground Dice)."""
    scored = [*classes[1:], *groups]
    by_fold = per_image.groupby(["fold", "class"])["dice"].mean().unstack("class")
    fg = by_fold[classes[1:]].mean(axis=1)
    stats = {c: {"mean": float(by_fold[c].mean()), "std": float(by_fold[c].std(ddof=1))} for c in scored}
    return {"folds": int(len(by_fold)), "dice": stats,
            "mean_fg_dice": {"mean": float(fg.mean()), "std": float(fg.std(ddof=1))},
            "per_fold_mean_fg_dice": [round(float(v), 6) for v in fg]}


def main(dataset: str, params: Params) -> None:
    """Evaluate one dataset's model(s) on the test split, or on every held-out fold."""
    cfg = params.evaluate
    seed_everything(cfg.seed, params.train.threads)
    device = pick_device(params.train.device)
    converted = paths.converted_dir(dataset)
    manifest = read_csv(converted / paths.MANIFEST).set_index("id")
    vocabulary = sorted(manifest["image_class"].unique())
    results: dict[str, ImageResult] = {}
    for r in (range(params.split.folds) if params.split.folds else [-1]):
        found, classes = evaluate_round(dataset, r, device, cfg.combine, manifest, vocabulary)
        results.update(found)
    groups = applicable_groups(cfg.combine, classes)
    per_image = pd.DataFrame([row for res in results.values() for row in res.rows])
    metrics = aggregate(per_image, classes, cfg.bootstrap, cfg.seed, groups)
    if params.split.folds:
        metrics["cv"] = without_nan(cross_validation(per_image, classes, groups))
    picture = overlay_grid(results, per_image, converted, manifest, cfg.overlays, classes) if cfg.overlays else None
    write_outputs(dataset, metrics, per_image, results, picture, classes)
    log_to_run(dataset, params, metrics)
    log.info("%s: mean foreground dice %.4f on %d test images; %s", dataset, metrics["mean_fg_dice"] or float("nan"),
             metrics["n_test"], {c: round(v["mean"], 3) for c, v in metrics["dice"].items() if v["mean"] is not None})


def log_to_run(dataset: str, params: Params, metrics: dict) -> None:
    """Add the test metrics and artifacts to the training run in MLflow."""
    run = read_json(paths.model_dir(dataset) / paths.RUN_INFO)
    if not run.get("run_id"):
        return
    with Tracker.resume(params.mlflow, run["run_id"], find_repo_root()) as tracker:
        tracker.log_metrics(numeric_metrics(metrics, "test"))
        for name in (paths.EVAL_METRICS, paths.PER_IMAGE, paths.OVERLAYS):
            if (paths.metrics_dir(dataset) / name).exists():
                tracker.log_artifact(paths.metrics_dir(dataset) / name, "evaluation")


if __name__ == "__main__":
    run_stage(main)
