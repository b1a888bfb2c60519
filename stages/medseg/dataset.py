"""In-memory training data: originals + augmented shards, chosen by split.csv.

``load_training_data(converted, augmented, split_csv, fold)`` returns the
train and valid ``ArraySet``s at the augment stage's output size. Train holds
the train originals (resized) and the augmented copies the split assigned to
train; valid holds originals only. With ``fold = r >= 0`` (cross-validation
round r of k) the fold column decides instead: fold r is test, fold r+1
(mod k) is valid, the other folds are train.

Everything is decoded once; a training step only slices arrays, so the
model never waits for data.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from .errors import DataError
from .imageio import read_png
from .paths import AUGMENT_STATS, MANIFEST, REPORT
from .tables import read_csv, read_json

log = logging.getLogger(__name__)


@dataclass
class ArraySet:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N, H, W) uint8
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def dataset_info(converted: Path) -> dict:
    """``classes`` and ``channels`` as written by the convert stage."""
    return read_json(converted / REPORT)


def augment_info(augmented: Path) -> dict:
    return read_json(augmented / AUGMENT_STATS)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width): area averaging when shrinking, linear when enlarging."""
    h, w = size
    interp = cv2.INTER_AREA if image.shape[0] >= h and image.shape[1] >= w else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize image (``resize_image``) and label (nearest, never new values) to (height, width)."""
    return resize_image(image, size), cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def as_hwc(image: np.ndarray) -> np.ndarray:
    return image[..., None] if image.ndim == 2 else image


def load_originals(converted: Path, ids: list[str], size: tuple[int, int]) -> ArraySet:
    manifest = read_csv(converted / MANIFEST).set_index("id")
    images, labels = [], []
    for sid in ids:
        row = manifest.loc[sid]
        img, lab = resize_pair(read_png(converted / row["image"]), read_png(converted / row["label"]), size)
        images.append(as_hwc(img))
        labels.append(lab)
    return _stack(images, labels, ids, size)


def _stack(images: list, labels: list, ids: list[str], size: tuple[int, int]) -> ArraySet:
    if not ids:
        return ArraySet(np.zeros((0, *size, 1), np.uint8), np.zeros((0, *size), np.uint8), [])
    return ArraySet(np.stack(images), np.stack(labels), list(ids))


def load_augmented(augmented: Path, ids: list[str]) -> ArraySet:
    """Rows of the shards whose id is in ``ids``, in the order of ``ids``."""
    if not ids:
        return ArraySet(np.zeros((0, 1, 1, 1), np.uint8), np.zeros((0, 1, 1), np.uint8), [])
    manifest = read_csv(augmented / MANIFEST).set_index("id").loc[ids]
    images, labels, got = [], [], []
    for shard, rows in manifest.groupby("shard", sort=True):
        with np.load(augmented / shard) as data:
            index = rows["index"].astype(int).to_numpy()
            images.append(data["images"][index])
            labels.append(data["labels"][index])
        got.extend(rows.index)
    perm = pd.Index(got).get_indexer(ids)
    return ArraySet(np.concatenate(images)[perm], np.concatenate(labels)[perm], list(ids))


def concat(a: ArraySet, b: ArraySet) -> ArraySet:
    if not len(a):
        return b
    if not len(b):
        return a
    return ArraySet(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]), a.ids + b.ids)


def select(split: pd.DataFrame, fold: int = -1) -> dict[str, pd.DataFrame]:
    """Rows for ``train`` (originals + augmented), ``valid`` and ``test`` (originals only).

    ``fold < 0``: the fixed split. ``fold = r``: cross-validation round r.
    """
    original = split["kind"] == "original"
    if fold < 0:
        return {"train": split[split["split"] == "train"],
                "valid": split[(split["split"] == "valid") & original],
                "test": split[(split["split"] == "test") & original]}
    folds = split["fold"].astype(int)
    k = int(folds.max()) + 1
    if not 0 <= fold < k:
        raise DataError("split.csv", f"cross-validation round {fold} does not exist (k = {k}; see split.folds)")
    valid = (fold + 1) % k
    return {"train": split[(folds != fold) & (folds != valid)],
            "valid": split[(folds == valid) & original],
            "test": split[(folds == fold) & original]}


def load_training_data(converted: Path, augmented: Path, split_csv: Path, fold: int = -1) -> tuple[ArraySet, ArraySet]:
    size = tuple(augment_info(augmented)["size"])
    rows = select(read_csv(split_csv), fold)
    train_rows, valid_rows = rows["train"], rows["valid"]
    orig_ids = sorted(train_rows.loc[train_rows["kind"] == "original", "id"])
    aug_ids = sorted(train_rows.loc[train_rows["kind"] == "augmented", "id"])
    train = concat(load_originals(converted, orig_ids, size), load_augmented(augmented, aug_ids))
    valid = load_originals(converted, sorted(valid_rows["id"]), size)
    if not len(train) or not len(valid):
        raise DataError(split_csv, f"empty train ({len(train)}) or valid ({len(valid)}) set; check split params")
    log.info("train: %d samples (%d originals, %d augmented); valid: %d originals at %s",
             len(train), len(orig_ids), len(aug_ids), len(valid), size)
    return train, valid


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
