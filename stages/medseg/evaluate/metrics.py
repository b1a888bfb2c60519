"""Segmentation metrics on integer label maps, at the images' native resolution.

Inputs are predicted and ground-truth label maps of equal shape (2-D here, any
rank works), integer values in ``0..num_classes-1`` with 0 = background. The
ground truth may also hold ``IGNORE`` (255, the ignore label of
``convert.ignore``): those pixels are left out of every score and of the
confusion matrix, whatever was predicted there, as if they were cropped away.

- ``per_class_scores``: Dice, IoU and HD95 of each foreground class in one image.
- ``summarise``: mean, std and a bootstrap 95% CI of per-image scores, NaN ignored.
- ``summarise_mean_over_classes``: the mean over classes of each class's mean
  (the mean foreground Dice), with a bootstrap 95% CI.

The bootstrap resamples whole patient groups, not images: several images of
one group (slices of a scan, a mirrored copy, scans of one patient) are not
independent, and resampling them one by one gives too narrow an interval.
Each resample draws as many groups as there are, with replacement; its mean
is the sum of the drawn groups' scores over their count. With one image per
group this is the plain image bootstrap. Every interval comes with the
number of images and of groups it rests on.
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

from medseg.data.converted import IGNORE

CI_LEVEL = 0.95


def _check_labels(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Raise on a bad pair; return the scored pixels (``target`` not ``IGNORE``) as a boolean mask."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    valid = target != IGNORE
    for name, arr in (("pred", pred), ("target", target[valid])):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: expected an integer label map, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name}: labels must be in 0..{num_classes - 1}, got {arr.min()}..{arr.max()}")
    return valid


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
        target: ground-truth label map, same shape; ``IGNORE`` pixels are not scored.
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
    valid = _check_labels(pred, target, num_classes)
    return {c: _class_scores((pred == c) & valid, target == c, spacing) for c in range(1, num_classes)}


def bootstrap_means(scores: np.ndarray, groups: Sequence, n_boot: int, seed: int) -> np.ndarray:
    """Means of each column of ``scores`` over ``n_boot`` resamples of whole groups.

    Args:
        scores: ``(images, columns)``; NaN marks an image a column does not score.
        groups: the group of each image (row).
        n_boot: resamples.
        seed: the same seed gives the same resamples.

    Returns:
        ``(n_boot, columns)``; NaN where a resample holds no score of a column.
        Only groups holding at least one score are drawn; groups are ordered by
        name, so the result does not depend on the order of groups in the input.
    """
    scores = np.asarray(scores, dtype=float)
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    scored = ~np.isnan(scores)
    sums, counts = np.zeros((len(names), scores.shape[1])), np.zeros((len(names), scores.shape[1]))
    np.add.at(sums, inverse.ravel(), np.where(scored, scores, 0.0))
    np.add.at(counts, inverse.ravel(), scored)
    held = counts.sum(axis=1) > 0
    sums, counts = sums[held], counts[held]
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def _interval(boot: np.ndarray) -> tuple[float, float]:
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(low), float(high)


def _check_groups(n: int, groups: Sequence | None, n_boot: int) -> np.ndarray:
    if n_boot < 1:
        raise ValueError(f"n_boot: must be >= 1, got {n_boot}")
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups: expected one group per value ({n}), got shape {groups.shape}")
    return groups


def summarise(values: Sequence[float], n_boot: int = 1000, seed: int = 0, groups: Sequence | None = None,
              unit: str = "images") -> dict[str, float | int]:
    """Mean, sample std and percentile-bootstrap 95% CI of the mean, ignoring NaN.

    Args:
        values: one score per image (or per ``unit``), NaN where not scored.
        n_boot: bootstrap resamples.
        seed: the same seed gives the same CI.
        groups: the patient group of each value; the bootstrap resamples whole
            groups. None: each value is its own group.
        unit: what a value belongs to, naming the count ``n_<unit>``.

    Returns:
        ``{"mean", "std", "n", "n_<unit>", "n_groups", "ci_low", "ci_high"}``;
        ``n`` and ``n_<unit>`` count the non-NaN values, ``n_groups`` their
        groups. With ``n == 0`` every statistic is NaN; with ``n == 1`` the std
        is NaN and the CI collapses to the value.

    Raises:
        ValueError: ``n_boot < 1``, or ``groups`` not one per value.
    """
    arr = np.asarray(values, dtype=float)
    groups = _check_groups(arr.size, groups, n_boot)
    kept = ~np.isnan(arr)
    arr, groups = arr[kept], groups[kept]
    n, n_groups = int(arr.size), int(len(np.unique(groups)))
    out: dict[str, float | int] = {"mean": float("nan"), "std": float("nan"), "n": n, f"n_{unit}": n,
                                   "n_groups": n_groups, "ci_low": float("nan"), "ci_high": float("nan")}
    if n == 0:
        return out
    out["ci_low"], out["ci_high"] = _interval(bootstrap_means(arr[:, None], groups, n_boot, seed)[:, 0])
    out["mean"] = float(arr.mean())
    out["std"] = float(arr.std(ddof=1)) if n > 1 else float("nan")
    return out


def summarise_mean_over_classes(scores: np.ndarray, n_boot: int = 1000, seed: int = 0,
                                groups: Sequence | None = None, unit: str = "images") -> dict[str, float | int]:
    """The mean over columns (classes) of each column's mean, NaN ignored, with a bootstrap 95% CI.

    This is the mean foreground Dice: each class averaged over the images
    that score it, then the classes averaged. Each resample recomputes every
    class's mean from the drawn groups, then their mean, so the interval
    covers the statistic as reported.

    Args:
        scores: ``(images, classes)``, NaN where an image does not score a class.
        n_boot, seed, groups, unit: as for ``summarise``.

    Returns:
        ``{"mean", "n_<unit>", "n_groups", "ci_low", "ci_high"}``, counting the
        images that score at least one class and their groups; NaN statistics
        when none does.

    Raises:
        ValueError: ``n_boot < 1``, or ``groups`` not one per row.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected (images, classes), got shape {scores.shape}")
    groups = _check_groups(len(scores), groups, n_boot)
    kept = ~np.isnan(scores).all(axis=1)
    scores, groups = scores[kept], groups[kept]
    out: dict[str, float | int] = {"mean": float("nan"), f"n_{unit}": int(len(scores)),
                                   "n_groups": int(len(np.unique(groups))), "ci_low": float("nan"),
                                   "ci_high": float("nan")}
    if not len(scores):
        return out
    columns = [col[~np.isnan(col)] for col in scores.T]
    out["mean"] = float(np.mean([col.mean() for col in columns if col.size]))
    # A resample may lack a class (NaN): the mean is over the classes it holds, as for ``mean``. Every
    # drawn group scores some class, so no resample lacks them all.
    out["ci_low"], out["ci_high"] = _interval(np.nanmean(bootstrap_means(scores, groups, n_boot, seed), axis=1))
    return out


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel confusion matrix ``(num_classes, num_classes)``, int64: ``[true, predicted]``; ``IGNORE`` pixels left out.

    Raises:
        ValueError: shapes differ, labels are not integers or out of range.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    valid = _check_labels(pred, target, num_classes)
    flat = target[valid].astype(np.int64) * num_classes + pred[valid]
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)
