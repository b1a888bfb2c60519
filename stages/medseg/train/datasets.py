"""In-memory training data: the originals and augmented copies a round trains on, and its batches.

``load_training_data(converted, augmented, split_file, round)`` returns the train
and valid ``ArraySet``s of one ``Round`` at the augment stage's training
size. Train holds the round's train originals (resized with the model-input
contract, ``medseg.data.preprocess``) and the augmented copies the split
assigned to train; valid holds originals only. Everything is decoded once;
a training step only slices arrays, so the model never waits for data.
``Batches`` cuts an ``ArraySet`` into seeded, shuffled mini-batches.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.data.converted import ConvertedDataset
from medseg.data.preprocess import as_hwc, resize_pair, to_tensor
from medseg.data.rounds import Round
from medseg.data.shards import AugmentedDataset
from medseg.data.split import read_split
from medseg.io.errors import DataError

from .distributed import World, shard

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
        image, label = resize_pair(*converted.read(sid), size)
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


class Batches:
    """Seeded shuffled mini-batches over an ``ArraySet``, as tensors on ``device``.

    ``batch_size`` is the global batch; with several processes (``world``) each
    yields its shard of every global batch, from the same permutation.
    """

    def __init__(self, data: ArraySet, batch_size: int, device: torch.device, memory_format, seed: int,
                 world: World = World()) -> None:
        self.data, self.batch_size, self.device, self.memory_format = data, batch_size, device, memory_format
        self.world = world
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        for x, y, _ in self.weighted():
            yield x, y

    def weighted(self):
        """``(x, y, weight)``: ``weight`` is this shard's size times the process count over the global batch size.

        Scaling each process's mean loss by it makes DDP's gradient average
        the gradient of the global batch's mean loss, also for an uneven last batch.
        """
        order = torch.randperm(len(self.data), generator=self.generator).numpy()
        for start in range(0, len(order), self.batch_size):
            idx = np.sort(order[start:start + self.batch_size])
            part = shard(idx, self.world)
            if part is not None:
                yield *self.tensors(part), len(part) * self.world.size / len(idx)

    def tensors(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_tensor(self.data.images[idx]).to(self.device, memory_format=self.memory_format)
        y = torch.from_numpy(self.data.labels[idx]).long().to(self.device)
        return x, y
