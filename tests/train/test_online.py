"""Online augmentation: seeded, image and labels moved alike, labels never invented, off means unchanged."""
from __future__ import annotations

import numpy as np
import torch

from medseg.config import OnlineAugment
from medseg.train.datasets import ArraySet, Batches
from medseg.train.online import augment_batch


def batch(n: int = 4, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.zeros(n, size, size, dtype=torch.long)
    y[:, 10:30, 8:20] = 1
    y[:, 30:40, 25:45] = 3
    return (0.2 + 0.2 * y.float()).unsqueeze(1), y


def test_the_same_seed_gives_the_same_batch() -> None:
    x, y = batch()
    a = augment_batch(x, y, OnlineAugment(), torch.Generator().manual_seed(3))
    b = augment_batch(x, y, OnlineAugment(), torch.Generator().manual_seed(3))
    c = augment_batch(x, y, OnlineAugment(), torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_labels_follow_the_image_and_are_never_invented() -> None:
    x, y = batch()
    geometry_only = OnlineAugment(brightness=0, contrast=0, gamma=0, noise=0)
    ax, ay = augment_batch(x, y, geometry_only, torch.Generator().manual_seed(0))
    assert set(ay.unique().tolist()) <= {0, 1, 3}
    assert not torch.equal(ay, y)  # it moved
    # The image was drawn from the labels: read back, it agrees away from boundaries.
    decoded = ((ax[:, 0] - 0.2) / 0.2).round().clamp(0, 3).long()
    inner = (torch.nn.functional.max_pool2d(ay[:, None].float(), 5, 1, 2)[:, 0]
             == -torch.nn.functional.max_pool2d(-ay[:, None].float(), 5, 1, 2)[:, 0])
    assert ((decoded != ay) & inner).sum() == 0


def test_p_zero_leaves_the_batch_as_it_was() -> None:
    x, y = batch()
    ax, ay = augment_batch(x, y, OnlineAugment(p=0.0), torch.Generator().manual_seed(0))
    assert torch.equal(ax, x) and torch.equal(ay, y)


def test_patches_are_seeded_sized_and_find_the_foreground() -> None:
    labels = np.zeros((6, 64, 64), np.uint8)
    labels[:, 50:54, 50:54] = 1  # a small structure in a corner
    data = ArraySet(np.zeros((6, 64, 64, 1), np.uint8), labels, [str(i) for i in range(6)])

    def draws(foreground: float) -> list[torch.Tensor]:
        batches = Batches(data, 4, torch.device("cpu"), torch.contiguous_format, 1, steps=20, patch=(16, 16),
                          foreground=foreground)
        return [y for _, y in batches]

    first, again = draws(0.5), draws(0.5)
    assert len(first) == 20 and all(y.shape == (4, 16, 16) for y in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    seen = lambda ys: float(np.mean([bool(y[i].any()) for y in ys for i in range(4)]))  # noqa: E731
    assert seen(draws(1.0)) == 1.0 and seen(draws(0.0)) < 0.3
