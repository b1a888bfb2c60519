"""Post-processing: class groups first, the largest region only, stored and read back as plain values."""
from __future__ import annotations

import numpy as np
import torch

from medseg.model.postprocess import Postprocess, grouped_argmax, keep_largest


def test_a_group_wins_where_its_classes_together_beat_the_background() -> None:
    # background 0.4, benign 0.3, malignant 0.3: arg-max says background, the mass group says mass.
    probs = torch.tensor([0.4, 0.3, 0.3, 0.0]).log()[:, None, None].expand(4, 2, 2).clone()
    assert (probs.argmax(0) == 0).all()
    label = grouped_argmax(probs, ((1, 2),))
    assert set(label.unique().tolist()) <= {1, 2}
    # A class outside the group still competes on its own.
    liver = torch.tensor([0.3, 0.15, 0.15, 0.4]).log()[:, None, None].expand(4, 2, 2)
    assert (grouped_argmax(liver, ((1, 2),)) == 3).all()


def test_keep_largest_keeps_one_region_per_class() -> None:
    label = np.zeros((20, 20), np.uint8)
    label[1:3, 1:3] = 1
    label[10:18, 10:18] = 1
    label[1:5, 15:19] = 2
    kept = keep_largest(label)
    assert (kept[1:3, 1:3] == 0).all() and (kept[10:18, 10:18] == 1).all() and (kept[1:5, 15:19] == 2).all()


def test_round_trip_through_plain_values() -> None:
    post = Postprocess(True, ((1, 2),), False)
    assert Postprocess.from_dict(post.to_dict()) == post and Postprocess.from_dict(None) == Postprocess()
    logits = torch.zeros(3, 4, 4)
    logits[2] = 1.0
    assert (post.labels(logits) == 2).all() and post.labels(logits).dtype == np.uint8
