"""Score a checkpoint on test images at their native resolution.

``predict_native`` resizes an image to the training size, predicts, resizes
the logits back to the image's own height and width (bilinear) and takes the
arg-max, so scores are computed on the original label maps, not on resized
ones. ``score_images`` returns one row per image and class; ``aggregate``
turns them into the stable metrics dictionary written to ``eval.json``:

``{"n_test", "mean_fg_dice", "dice"|"iou"|"hd95": {class: {mean, std, n,
ci_low, ci_high}}, "false_positive": {class: {images, rate}},
"empty_image_fp_rate", "image_accuracy"}``

Images whose ground truth lacks a class (AUL's Normal images have no mass)
do not enter that class's Dice; they count towards its false-positive rate
instead (fraction of such images where the class is predicted anyway).
NaN never reaches the JSON: an undefined statistic is written as null.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .dataset import as_hwc, resize_image, to_tensor
from .metrics import confusion_matrix, per_class_scores, summarise


@torch.no_grad()
def predict_native(model: torch.nn.Module, image: np.ndarray, size: tuple[int, int],
                   device: torch.device) -> np.ndarray:
    """Label map (H, W) uint8 for one (H, W[, C]) uint8 image of any size."""
    h, w = image.shape[:2]
    small = resize_image(image, size)
    x = to_tensor(as_hwc(small)[None]).to(device)
    logits = model(x).float()
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].to("cpu", torch.uint8).numpy()


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


def applicable_groups(combine: dict[str, list[str]], classes: list[str]) -> dict[str, list[int]]:
    """The ``combine`` groups whose classes all exist here, as label values."""
    return {name: [classes.index(c) for c in members] for name, members in combine.items()
            if all(c in classes for c in members)}


def score_image(sid: str, image_class: str, pred: np.ndarray, target: np.ndarray, classes: list[str],
                vocabulary: list[str], groups: dict[str, list[int]] | None = None) -> ImageResult:
    """Rows of scores for each foreground class, then for each combined group (e.g. benign+malignant)."""
    scores = {classes[c]: s for c, s in per_class_scores(pred, target, len(classes)).items()}
    for name, members in (groups or {}).items():
        scores[name] = per_class_scores(np.isin(pred, members).astype(np.uint8),
                                        np.isin(target, members).astype(np.uint8), 2)[1]
    pixels = {classes[c]: int(np.count_nonzero(pred == c)) for c in range(1, len(classes))}
    guess = predicted_image_class(pixels, vocabulary)
    rows = [{"id": sid, "image_class": image_class, "predicted_class": guess, "class": name,
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
    """Per-class (and per combined group) summaries with bootstrap intervals; see the module docstring.

    ``mean_fg_dice`` averages the dataset's own foreground classes only, so a
    combined group never counts twice.
    """
    scored = [*classes[1:], *(groups or {})]
    out: dict = {"n_test": int(per_image["id"].nunique())}
    for metric in ("dice", "iou", "hd95"):
        out[metric] = {c: summarise(per_image.loc[per_image["class"] == c, metric].tolist(), max(n_boot, 1), seed)
                       for c in scored}
    means = [out["dice"][c]["mean"] for c in classes[1:] if not math.isnan(out["dice"][c]["mean"])]
    out["mean_fg_dice"] = float(np.mean(means)) if means else float("nan")
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


def tile(image: np.ndarray, size: tuple[int, int] = (192, 256)) -> np.ndarray:
    """Resize an RGB picture to a fixed (height, width) tile for a grid."""
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
