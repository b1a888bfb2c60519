"""A model folder as one predictor: the checkpoints of every cross-validation round, averaged.

``load_ensemble(path)`` takes a checkpoint file (an ensemble of one) or a
model folder (``models/<name>/``: every ``model*.pt`` in it, ordered by
their round, the ``fold`` train records in ``info``). ``ensemble_labels``
gives one image's label map: with one member exactly ``checkpoint_labels``;
with several, each member predicts as it would alone (its own canvas,
window and mirror averaging), their softmax probabilities are averaged in
round order, and the post-processing steps that decide labels (class groups
first, largest region only) are applied when more than half of the members
chose them on their validation images (``combined``). Predict and the
registered MLflow model (``medseg.tracking.pyfunc``) both call it, so they
give the same labels for the same folder.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.io.errors import DataError

from .checkpoint import Checkpoint, load_checkpoint
from .inference import checkpoint_labels, native_logits
from .postprocess import Postprocess

PATTERN = "model*.pt"  # the names train gives checkpoints: model.pt, model_fold<r>.pt


@dataclass(frozen=True)
class Ensemble:
    members: tuple[Checkpoint, ...]  # in round order
    postprocess: Postprocess  # the label decision of several members (``combined``)

    @classmethod
    def of(cls, members: Sequence[Checkpoint], source: Path | str = "ensemble") -> Ensemble:
        """``members`` in round order; ``DataError`` naming ``source`` when they do not predict the same thing."""
        if not members:
            raise DataError(source, f"holds no checkpoint ({PATTERN})")
        first = members[0]
        for ckpt in members[1:]:
            if (ckpt.classes, ckpt.channels) != (first.classes, first.channels):
                raise DataError(source, f"checkpoints disagree on classes or channels ({first.classes}, "
                                        f"{first.channels} against {ckpt.classes}, {ckpt.channels})")
        ordered = tuple(sorted(members, key=lambda c: int(c.info.get("fold", -1))))
        return cls(ordered, combined([c.postprocess for c in ordered]))

    @property
    def classes(self) -> list[str]:
        return self.members[0].classes

    @property
    def channels(self) -> int:
        return self.members[0].channels

    @property
    def info(self) -> dict:
        """The first round's training facts (dataset, image classes, a CT model's volume settings)."""
        return self.members[0].info


def combined(posts: Sequence[Postprocess]) -> Postprocess:
    """The label decision of an ensemble: each step that more than half of ``posts`` chose.

    Mirror averaging stays each member's own (it is part of its prediction).
    """
    chosen_groups = Counter(p.groups for p in posts if p.groups)
    groups, votes = chosen_groups.most_common(1)[0] if chosen_groups else ((), 0)
    largest = sum(p.largest_component for p in posts)
    return Postprocess(flip_tta=False, groups=groups if 2 * votes > len(posts) else (),
                       largest_component=2 * largest > len(posts))


def member_paths(path: Path) -> list[Path]:
    """``path`` itself when it is a file, else the checkpoints in the folder; ``DataError`` when there are none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, "checkpoint or model folder not found; run the train stage first")
    found = sorted(path.glob(PATTERN))
    if not found:
        raise DataError(path, f"holds no checkpoint ({PATTERN})")
    return found


def load_ensemble(path: Path, device: torch.device | str = "cpu") -> Ensemble:
    """The checkpoint at ``path``, or every checkpoint in the model folder ``path``, as one predictor."""
    return Ensemble.of([load_checkpoint(p, device) for p in member_paths(path)], path)


@torch.no_grad()
def ensemble_labels(ensemble: Ensemble, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Label map (H, W) uint8 for one (H, W[, C]) uint8 image."""
    if len(ensemble.members) == 1:
        return checkpoint_labels(ensemble.members[0], image, device)
    probs = None
    for ckpt in ensemble.members:
        p = native_logits(ckpt.model, image, ckpt.size, device, ckpt.window, ckpt.postprocess.flip_tta).softmax(0)
        probs = p if probs is None else probs + p
    # The mean's logarithm: arg-max and the groups' softmax then see the mean probabilities.
    return ensemble.postprocess.labels(torch.log((probs / len(ensemble.members)).clamp_min(1e-30)))
