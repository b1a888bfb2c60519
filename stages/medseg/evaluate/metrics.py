"""Segmentation metrics on integer label maps, at the images' native resolution.

Inputs are predicted and ground-truth label maps of equal shape (2-D here, any
rank works), integer values in ``0..num_classes-1`` with 0 = background.

- ``per_class_scores``: Dice, IoU and HD95 of each foreground class in one image.
- ``summarise``: mean, std and a bootstrap 95% CI of per-image scores, NaN ignored.
- ``confusion_matrix``: pixel counts, rows = ground truth, columns = prediction.

Conventions for a class ``c`` in one image (background is never scored):

=================  ==============  ===========  ===============================
ground truth       prediction      Dice / IoU   HD95, flag
=================  ==============  ===========  ===============================
present            present         computed     computed
present            empty           0 / 0        NaN, ``false_negative``
empty              present         NaN / NaN    NaN, ``false_positive``
empty              empty           NaN / NaN    NaN (a true negative)
=================  ==============  ===========  ===============================

So Dice and IoU are averaged over the images in which the class is present,
as in the AUL paper's per-class results, and false alarms on images without
the class (e.g. a mass predicted in a normal liver) are reported apart, as a
count of ``false_positive`` images. nnU-Net differs in one cell: it scores
"empty / present" as Dice 0, which mixes detection into segmentation quality;
``tp``, ``fp``, ``fn`` (pixels) are returned so that convention can be
recomputed. A missed structure has no surface to measure a distance from, so
its HD95 is NaN rather than an arbitrary penalty such as the image diagonal,
which would dominate the mean; misses are counted by ``false_negative``.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

CI_LEVEL = 0.95


def _check_labels(pred: np.ndarray, target: np.ndarray, num_classes: int) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    for name, arr in (("pred", pred), ("target", target)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: expected an integer label map, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name}: labels must be in 0..{num_classes - 1}, got {arr.min()}..{arr.max()}")


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """(H, W) boolean -> (1, 1, H, W), the (N, C, ...) layout MONAI metrics expect."""
    return torch.from_numpy(np.ascontiguousarray(mask))[None, None]


def hd95(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two non-empty boolean masks.

    Distances are between boundary pixels, in pixels or, with ``spacing`` (one
    value per axis), in the spacing's unit.
    """
    spacing_arg = None if spacing is None else [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about an argument its own helper passes; nothing for us to act on.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        distance = compute_hausdorff_distance(
            _as_batch(pred_mask), _as_batch(gt_mask), include_background=True, percentile=95, spacing=spacing_arg
        )
    return float(distance.item())


def _class_scores(p: np.ndarray, t: np.ndarray, spacing: Sequence[float] | None) -> dict[str, Any]:
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    gt_empty, pred_empty = tp + fn == 0, tp + fp == 0
    if gt_empty:
        dice = iou = float("nan")
    else:
        dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
    distance = float("nan") if gt_empty or pred_empty else hd95(p, t, spacing)
    return {
        "dice": dice,
        "iou": iou,
        "hd95": distance,
        "gt_empty": gt_empty,
        "pred_empty": pred_empty,
        "false_positive": gt_empty and not pred_empty,
        "false_negative": pred_empty and not gt_empty,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def per_class_scores(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
) -> dict[int, dict[str, Any]]:
    """Scores of foreground classes ``1..num_classes-1`` in one image.

    Args:
        pred: predicted label map, integers in ``0..num_classes-1``.
        target: ground-truth label map, same shape.
        num_classes: number of classes including background.
        spacing: pixel size per axis for HD95; None measures in pixels.

    Returns:
        ``{class: {"dice", "iou", "hd95", "gt_empty", "pred_empty",
        "false_positive", "false_negative", "tp", "fp", "fn"}}``; see the
        module docstring for the empty-mask conventions.

    Raises:
        ValueError: shapes differ, labels are not integers or out of range.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    _check_labels(pred, target, num_classes)
    return {c: _class_scores(pred == c, target == c, spacing) for c in range(1, num_classes)}


def summarise(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict[str, float | int]:
    """Mean, sample std and percentile-bootstrap 95% CI of the mean, ignoring NaN.

    Returns ``{"mean", "std", "n", "ci_low", "ci_high"}``; ``n`` counts the
    non-NaN values. With ``n == 0`` every statistic is NaN; with ``n == 1`` the
    std is NaN and the CI collapses to the value. The same ``seed`` gives the
    same CI.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot: must be >= 1, got {n_boot}")
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    n = arr.size
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    boot_means = arr[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    tail = (1 - CI_LEVEL) / 2 * 100
    ci_low, ci_high = np.percentile(boot_means, [tail, 100 - tail])
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if n > 1 else float("nan"),
        "n": n,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
    }


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel confusion matrix ``(num_classes, num_classes)``, int64: ``[true, predicted]``.

    Raises:
        ValueError: shapes differ, labels are not integers or out of range.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    _check_labels(pred, target, num_classes)
    flat = target.ravel().astype(np.int64) * num_classes + pred.ravel()
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)
