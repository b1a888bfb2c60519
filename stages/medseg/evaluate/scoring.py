"""Per-image scores of test predictions, and their summary in ``eval.json``.

Predictions are made at each image's native resolution
(``medseg.model.inference.predict_native``). ``score_image`` returns one row
per image and class (and per combined group of classes), with the image's
patient group from the split; ``aggregate`` turns the rows into the stable
metrics dictionary written to ``eval.json``:

``{"n_test", "n_test_groups", "mean_fg_dice", "mean_fg_dice_ci": {mean,
n_images, n_groups, ci_low, ci_high}, "dice"|"iou"|"hd95": {class: {mean,
std, n, n_images, n_groups, ci_low, ci_high}}, "false_positive": {class:
{images, rate}}, "empty_image_fp_rate", "image_accuracy"}``

The intervals resample whole patient groups (``medseg.evaluate.metrics``);
``n`` is kept beside ``n_images`` (the same count) for readers of older files.

Images whose ground truth lacks a class (AUL's Normal images have no mass)
do not enter that class's Dice; they count towards its false-positive rate
instead (fraction of such images where the class is predicted anyway).
NaN never reaches the JSON: an undefined statistic is written as null.
With cross-validation, ``cross_validation`` adds ``cv``: the mean and std
over rounds of each round's mean Dice.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medseg.data.converted import IGNORE

from .metrics import confusion_matrix, per_class_scores, summarise, summarise_mean_over_classes


@dataclass
class ImageResult:
    id: str
    image_class: str
    pred: np.ndarray
    rows: list[dict]
    confusion: np.ndarray


def predicted_image_class(pixels: dict[str, int], vocabulary: list[str]) -> str:
    """The image-level class implied by a prediction.

    Pixel classes that are also image classes (benign, malignant) compete by
    area; with none predicted, the one image class that is not a pixel class
    (e.g. ``normal``) is chosen. Returns ``""`` when the vocabularies do not
    overlap (nothing sensible to compare).
    """
    candidates = {c: n for c, n in pixels.items() if c in vocabulary}
    if not candidates:
        return ""
    best = max(sorted(candidates), key=lambda c: candidates[c])
    if candidates[best] > 0:
        return best
    rest = [c for c in vocabulary if c not in pixels]
    return rest[0] if len(rest) == 1 else ""


_FIELDS = ("dice", "iou", "hd95", "gt_empty", "pred_empty", "false_positive", "tp", "fp", "fn")


def class_scores(pred: np.ndarray, target: np.ndarray, classes: list[str], groups: dict[str, list[int]] | None = None,
                 spacing: Sequence[float] | None = None) -> dict[str, dict]:
    """Scores (``metrics.per_class_scores``) of each foreground class, then of each combined group, by name.

    Label maps of any rank: an image, or a volume with ``spacing`` (mm per axis) for HD95 in mm.
    ``IGNORE`` pixels of ``target`` are scored in no class and no group.
    """
    scores = {classes[c]: s for c, s in per_class_scores(pred, target, len(classes), spacing).items()}
    for name, members in (groups or {}).items():
        union = np.where(target == IGNORE, IGNORE, np.isin(target, members)).astype(np.uint8)
        scores[name] = per_class_scores(np.isin(pred, members).astype(np.uint8), union, 2, spacing)[1]
    return scores


def score_image(sid: str, image_class: str, pred: np.ndarray, target: np.ndarray, classes: list[str],
                vocabulary: list[str], groups: dict[str, list[int]] | None = None, *, group: str) -> ImageResult:
    """Rows of scores for each foreground class, then for each combined group (e.g. benign+malignant).

    ``group`` is the image's patient group (the split's ``group`` column), which the bootstrap resamples.
    """
    scores = class_scores(pred, target, classes, groups)
    pixels = {classes[c]: int(np.count_nonzero(pred == c)) for c in range(1, len(classes))}
    guess = predicted_image_class(pixels, vocabulary)
    rows = [{"id": sid, "group": group, "image_class": image_class, "predicted_class": guess, "class": name,
             **{k: s[k] for k in _FIELDS}} for name, s in scores.items()]
    return ImageResult(sid, image_class, pred, rows, confusion_matrix(pred, target, len(classes)))


def without_nan(value):
    """Replace NaN (also nested in dicts) by None, which JSON writes as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    return value


def aggregate(per_image: pd.DataFrame, classes: list[str], n_boot: int, seed: int,
              groups: dict[str, list[int]] | None = None) -> dict:
    """Per-class (and per combined group) summaries with bootstrap intervals over patient groups; see the
    module docstring.

    ``mean_fg_dice`` averages the dataset's own foreground classes only, so a
    combined group never counts twice; ``mean_fg_dice_ci`` is its interval.
    """
    scored = [*classes[1:], *(groups or {})]
    images = per_image.drop_duplicates("id").set_index("id")["group"]
    out: dict = {"n_test": len(images), "n_test_groups": int(images.nunique())}
    for metric in ("dice", "iou", "hd95"):
        out[metric] = {}
        for c in scored:
            rows = per_image[per_image["class"] == c]
            out[metric][c] = summarise(rows[metric].tolist(), max(n_boot, 1), seed, rows["group"].to_numpy())
    own = per_image[per_image["class"].isin(classes[1:])]
    dice = own.pivot(index="id", columns="class", values="dice").reindex(columns=classes[1:])
    out["mean_fg_dice_ci"] = summarise_mean_over_classes(dice.to_numpy(), max(n_boot, 1), seed,
                                                         images.loc[dice.index].to_numpy())
    out["mean_fg_dice"] = out["mean_fg_dice_ci"]["mean"]
    out["false_positive"] = {}
    for c in scored:
        absent = per_image[(per_image["class"] == c) & per_image["gt_empty"]]
        out["false_positive"][c] = {"images": len(absent),
                                    "rate": float(absent["false_positive"].mean()) if len(absent) else float("nan")}
    own = per_image[per_image["class"].isin(classes[1:])]
    by_image = own.groupby("id").agg(gt_empty=("gt_empty", "all"), pred_empty=("pred_empty", "all"),
                                           image_class=("image_class", "first"),
                                           predicted=("predicted_class", "first"))
    empty = by_image[by_image["gt_empty"]]
    out["empty_image_fp_rate"] = float((~empty["pred_empty"]).mean()) if len(empty) else float("nan")
    compared = by_image[by_image["predicted"] != ""]
    out["image_accuracy"] = float((compared["predicted"] == compared["image_class"]).mean()) if len(compared) \
        else float("nan")
    return without_nan(out)


def pick_cases(per_image: pd.DataFrame, n: int) -> tuple[list[str], list[str]]:
    """Ids of the ``n`` best and ``n`` worst images by mean foreground Dice."""
    mean = per_image.groupby("id")["dice"].mean().dropna().sort_values(kind="stable")
    worst = list(mean.index[:n])
    best = [i for i in mean.index[::-1][:n] if i not in worst]
    return best, worst


def cross_validation(per_image: pd.DataFrame, classes: list[str], groups: dict) -> dict:
    """Mean and std across rounds of each round's mean Dice per class (and mean foreground Dice)."""
    scored = [*classes[1:], *groups]
    by_fold = per_image.groupby(["fold", "class"])["dice"].mean().unstack("class")
    fg = by_fold[classes[1:]].mean(axis=1)
    stats = {c: {"mean": float(by_fold[c].mean()), "std": float(by_fold[c].std(ddof=1))} for c in scored}
    return {"folds": int(len(by_fold)), "dice": stats,
            "mean_fg_dice": {"mean": float(fg.mean()), "std": float(fg.std(ddof=1))},
            "per_fold_mean_fg_dice": [round(float(v), 6) for v in fg]}
