"""In-memory training data: the originals and augmented copies a round trains on, and its batches.

``load_training_data(converted, augmented, split_file, round)`` returns the train
and valid ``ArraySet``s of one ``Round`` at the augment stage's training
size. Train holds the round's train originals (resized with the model-input
contract, ``medseg.data.preprocess``) and the augmented copies the split
assigned to train, whose masks training may use; valid holds originals only.
``load_unlabelled`` returns the round's other train images (the split's
``labelled`` column, ``split.labelled_fraction``) without their masks. Everything is decoded once;
a training step only slices arrays, so the model never waits for data.
``Batches`` cuts an ``ArraySet`` into seeded, shuffled mini-batches of whole
samples or patches, transformed online.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.config import OnlineAugment
from medseg.data.converted import IGNORE, ConvertedDataset
from medseg.data.preprocess import as_hwc, fit_pair, to_tensor
from medseg.data.rounds import Round
from medseg.data.shards import AugmentedDataset
from medseg.data.split import read_split
from medseg.io.errors import DataError

from .distributed import World, shard
from .online import augment_batch

log = logging.getLogger(__name__)


@dataclass
class ArraySet:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N, H, W) uint8
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def concat(a: ArraySet, b: ArraySet) -> ArraySet:
    if not len(a):
        return b
    if not len(b):
        return a
    return ArraySet(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]), a.ids + b.ids)


def load_originals(converted: ConvertedDataset, ids: list[str], size: tuple[int, int]) -> ArraySet:
    """Converted images ``ids``, resized to ``size``."""
    if not ids:
        return ArraySet(np.zeros((0, *size, 1), np.uint8), np.zeros((0, *size), np.uint8), [])
    images, labels = [], []
    for sid in ids:
        image, label = fit_pair(*converted.read(sid), size)
        images.append(as_hwc(image))
        labels.append(label)
    return ArraySet(np.stack(images), np.stack(labels), list(ids))


def load_augmented(augmented: AugmentedDataset, ids: list[str]) -> ArraySet:
    return ArraySet(*augmented.load(ids), list(ids))


def load_training_data(converted: ConvertedDataset, augmented: AugmentedDataset, split_file: Path,
                       round_: Round = Round()) -> tuple[ArraySet, ArraySet]:
    """The train and valid sets of ``round_``; ``DataError`` when either is empty."""
    size = augmented.size
    rows = round_.select(read_split(split_file))
    train_rows, valid_rows = rows["train"], rows["valid"]
    orig_ids = sorted(train_rows.loc[train_rows["kind"] == "original", "id"])
    aug_ids = sorted(train_rows.loc[train_rows["kind"] == "augmented", "id"])
    train = concat(load_originals(converted, orig_ids, size), load_augmented(augmented, aug_ids))
    valid = load_originals(converted, sorted(valid_rows["id"]), size)
    if not len(train) or not len(valid):
        raise DataError(split_file, f"empty train ({len(train)}) or valid ({len(valid)}) set; check split params")
    log.info("train: %d samples (%d originals, %d augmented); valid: %d originals at %s",
             len(train), len(orig_ids), len(aug_ids), len(valid), size)
    return train, valid


def load_unlabelled(converted: ConvertedDataset, augmented: AugmentedDataset, split_file: Path,
                    round_: Round = Round()) -> ArraySet:
    """The images of ``round_``'s unlabelled train rows (``split.labelled_fraction``): originals and the augmented
    copies of their sources. Their label maps are all 0; training never reads them as targets."""
    rows = round_.select(read_split(split_file))["unlabelled"]
    orig_ids = sorted(rows.loc[rows["kind"] == "original", "id"])
    aug_ids = sorted(rows.loc[rows["kind"] == "augmented", "id"])
    images = concat(load_originals(converted, orig_ids, augmented.size), load_augmented(augmented, aug_ids))
    if len(images):
        log.info("unlabelled: %d images (%d originals, %d augmented)", len(images), len(orig_ids), len(aug_ids))
    return ArraySet(images.images, np.zeros_like(images.labels), images.ids)


class Batches:
    """Seeded mini-batches over an ``ArraySet``, as tensors on ``device``: whole samples or patches of them.

    Without ``steps`` one iteration is one shuffled pass (the last batch may
    be short); with ``steps`` it is that many full batches drawn from a running
    shuffled order. With ``patch`` (height, width) each sample is cropped to
    it, a ``foreground`` share of the crops centred on a random foreground
    pixel (rare structures are seen often enough; ignored pixels are no
    foreground). ``online`` transforms every
    batch (``medseg.train.online``). ``batch_size`` is the global batch; with
    several processes (``world``) each yields its shard of every global batch,
    from the same draws.
    """

    def __init__(self, data: ArraySet, batch_size: int, device: torch.device, memory_format, seed: int,
                 world: World = World(), *, steps: int | None = None, patch: tuple[int, int] | None = None,
                 foreground: float = 0.0, online: OnlineAugment | None = None) -> None:
        self.data, self.batch_size, self.device, self.memory_format = data, batch_size, device, memory_format
        self.world, self.steps, self.foreground, self.online = world, steps, foreground, online
        size = data.images.shape[1:3]
        self.patch = None if patch is None or tuple(patch) == tuple(size) else tuple(patch)
        if self.patch and (self.patch[0] > size[0] or self.patch[1] > size[1]):
            raise ValueError(f"patch {self.patch} is larger than the samples {tuple(size)}")
        self.generator = torch.Generator().manual_seed(seed)
        # Augmentation draws per process; sampling draws are the same on every process.
        self.aug_generator = torch.Generator().manual_seed(seed + 7919 * (world.rank + 1))
        self._queue: list[int] = []

    def __len__(self) -> int:
        return self.steps if self.steps is not None else math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        for x, y, _ in self.weighted():
            yield x, y

    def _global_batches(self):
        if self.steps is None:
            order = torch.randperm(len(self.data), generator=self.generator).numpy()
            for start in range(0, len(order), self.batch_size):
                yield np.sort(order[start:start + self.batch_size])
            return
        for _ in range(self.steps):
            while len(self._queue) < self.batch_size:
                self._queue += torch.randperm(len(self.data), generator=self.generator).tolist()
            idx, self._queue = self._queue[:self.batch_size], self._queue[self.batch_size:]
            yield np.sort(np.array(idx))

    def _corners(self, idx: np.ndarray) -> list[tuple[int, int]]:
        """Top-left corner of each sample's crop (drawn for the whole global batch on every process)."""
        height, width = self.data.images.shape[1:3]
        ph, pw = self.patch
        corners = []
        for k in idx:
            if torch.rand(1, generator=self.generator).item() < self.foreground:
                label = self.data.labels[k]
                ys, xs = np.nonzero((label > 0) & (label != IGNORE))
                if len(ys):
                    pick = int(torch.randint(len(ys), (1,), generator=self.generator))
                    corners.append((min(max(ys[pick] - ph // 2, 0), height - ph),
                                    min(max(xs[pick] - pw // 2, 0), width - pw)))
                    continue
            corners.append((int(torch.randint(height - ph + 1, (1,), generator=self.generator)),
                            int(torch.randint(width - pw + 1, (1,), generator=self.generator))))
        return corners

    def weighted(self):
        """``(x, y, weight)``: ``weight`` is this shard's size times the process count over the global batch size.

        Scaling each process's mean loss by it makes DDP's gradient average
        the gradient of the global batch's mean loss, also for an uneven last batch.
        """
        for idx in self._global_batches():
            corners = self._corners(idx) if self.patch else None
            part = shard(np.arange(len(idx)), self.world)
            if part is not None:
                x, y = self.tensors(idx[part], None if corners is None else [corners[i] for i in part])
                if self.online is not None:
                    x, y = augment_batch(x, y, self.online, self.aug_generator)
                yield x.contiguous(memory_format=self.memory_format), y, len(part) * self.world.size / len(idx)

    def tensors(self, idx: np.ndarray, corners: list[tuple[int, int]] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.data.images[idx], self.data.labels[idx]
        if corners is not None:
            ph, pw = self.patch
            images = np.stack([images[i, y:y + ph, x:x + pw] for i, (y, x) in enumerate(corners)])
            labels = np.stack([labels[i, y:y + ph, x:x + pw] for i, (y, x) in enumerate(corners)])
        x = to_tensor(images).to(self.device, memory_format=self.memory_format)
        y = torch.from_numpy(labels).long().to(self.device)
        return x, y
