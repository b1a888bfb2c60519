"""From logits to a label map: plain arg-max, or class groups first; optionally the largest region only.

``Postprocess`` is what evaluate and predict apply to a model's logits. The
training stage chooses it on the validation images (``medseg.train.loop``)
and stores it in the checkpoint, so prediction repeats the choice:

- ``flip_tta``: average the logits of the image and of its mirror image;
- ``groups``: where classes form a group (benign and malignant form a mass),
  first decide between background, each group (its classes' probabilities
  summed) and each other class, and only then the class within the winning
  group. Plain arg-max can call background a pixel that is surely a mass but
  split between two kinds of mass;
- ``largest_component``: keep only the largest connected region of each class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class Postprocess:
    flip_tta: bool = False
    groups: tuple[tuple[int, ...], ...] = ()  # class indices of each group decided first
    largest_component: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(tuple(int(c) for c in g) for g in self.groups))

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the checkpoint."""
        return {"flip_tta": self.flip_tta, "groups": [list(g) for g in self.groups],
                "largest_component": self.largest_component}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Postprocess:
        return cls(**(data or {}))

    def labels(self, logits: torch.Tensor) -> np.ndarray:
        """(C, H, W) logits -> (H, W) uint8 label map."""
        label = grouped_argmax(logits, self.groups) if self.groups else logits.argmax(0)
        label = label.to(torch.uint8).cpu().numpy()
        return keep_largest(label) if self.largest_component else label


def grouped_argmax(logits: torch.Tensor, groups: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Arg-max over background, each group (summed probabilities) and each ungrouped class; then within the group."""
    probs = logits.float().softmax(0)
    grouped = {c for g in groups for c in g}
    alone = [c for c in range(probs.shape[0]) if c not in grouped]
    candidates = [probs[alone]] + [probs[list(g)].sum(0, keepdim=True) for g in groups]
    winner = torch.cat(candidates).argmax(0)  # index into alone + groups
    label = probs.argmax(0)
    for k, c in enumerate(alone):
        label = torch.where(winner == k, torch.tensor(c), label)
    for k, members in enumerate(groups):
        within = torch.tensor(members)[probs[list(members)].argmax(0)]
        label = torch.where(winner == len(alone) + k, within, label)
    return label


def keep_largest(label: np.ndarray) -> np.ndarray:
    """Each foreground class reduced to its largest connected region (8-connectivity)."""
    out = np.zeros_like(label)
    for value in np.unique(label):
        if value == 0:
            continue
        count, regions, stats, _ = cv2.connectedComponentsWithStats((label == value).astype(np.uint8), connectivity=8)
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        out[regions == biggest] = value
    return out


PLAIN = Postprocess()  # arg-max, no flips, every region kept
