"""The ignore label (255) after convert: left out of the loss, of training's Dice and of every evaluate metric.

Each check compares against the same data with the ignored pixels cut away, computed
independently, so "left out" means exactly "as if those pixels did not exist".
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_loop import CLASSES, small_cfg, toy_set, train_once

from medseg.data.converted import IGNORE
from medseg.evaluate.metrics import confusion_matrix, per_class_scores
from medseg.evaluate.scoring import class_scores
from medseg.train.loop import image_dice, loss_for, pooled_dice

CUT = slice(0, 5)  # the ignored columns


def with_ignored_columns(labels: np.ndarray) -> np.ndarray:
    """A copy of (..., H, W) labels whose first columns are the ignore label."""
    out = labels.copy()
    out[..., CUT] = IGNORE
    return out


@pytest.mark.parametrize("batch_dice", [True, False])
def test_the_loss_equals_the_plain_loss_on_the_image_cut_to_its_labelled_pixels(batch_dice):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 12, 16, requires_grad=True)
    target = torch.from_numpy(toy_set(2, 3, size=24).labels[:, 6:18, 4:20]).long()
    loss_fn = loss_for(small_cfg(batch_dice=batch_dice), CLASSES)
    masked = loss_fn(logits, torch.from_numpy(with_ignored_columns(target.numpy())).long())
    cut = loss_fn(logits[..., 5:], target[..., 5:])
    assert masked.item() == pytest.approx(cut.item(), rel=1e-5)
    masked.backward()
    assert logits.grad[..., CUT].abs().max() == 0  # what is predicted on ignored pixels never matters
    assert logits.grad[..., 5:].abs().max() > 0


def test_a_batch_of_ignored_pixels_only_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = loss_for(small_cfg(), CLASSES)(logits, torch.full((1, 4, 4), IGNORE))
    loss.backward()
    assert loss.item() == 0 and logits.grad.abs().max() == 0


def test_a_group_dice_term_leaves_ignored_pixels_out_too():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 12, 16)
    target = torch.from_numpy(toy_set(1, 4, size=24).labels[:, 6:18, 4:20]).long()
    loss_fn = loss_for(small_cfg(group_dice_weight=1.0), CLASSES, {"any": [1, 2]})
    masked = loss_fn(logits, torch.from_numpy(with_ignored_columns(target.numpy())).long())
    assert masked.item() == pytest.approx(loss_fn(logits[..., 5:], target[..., 5:]).item(), rel=1e-5)


def test_training_dice_and_every_evaluate_metric_score_only_the_labelled_pixels():
    truth = toy_set(3, 5, size=24).labels
    rng = np.random.default_rng(0)
    pred = np.where(rng.random(truth.shape) < 0.2, rng.integers(0, 3, truth.shape), truth).astype(np.uint8)
    pred[..., CUT] = 2  # a wrong prediction wherever the truth is ignored: it must not count
    ignored = with_ignored_columns(truth)
    kept_pred, kept_truth = pred[..., 5:], truth[..., 5:]

    assert pooled_dice(torch.from_numpy(pred), torch.from_numpy(ignored), 3) == pytest.approx(
        pooled_dice(torch.from_numpy(kept_pred), torch.from_numpy(kept_truth), 3))
    regions = {"disc": [1], "bar": [2], "any": [1, 2]}
    assert image_dice(pred, ignored, regions) == pytest.approx(image_dice(kept_pred, kept_truth, regions))
    for k in range(len(truth)):
        assert (confusion_matrix(pred[k], ignored[k], 3) == confusion_matrix(kept_pred[k], kept_truth[k], 3)).all()
        got, want = per_class_scores(pred[k], ignored[k], 3), per_class_scores(kept_pred[k], kept_truth[k], 3)
        for c in (1, 2):
            assert {m: got[c][m] for m in ("tp", "fp", "fn")} == {m: want[c][m] for m in ("tp", "fp", "fn")}
            assert got[c]["dice"] == pytest.approx(want[c]["dice"], nan_ok=True)
        grouped = class_scores(pred[k], ignored[k], CLASSES, {"any": [1, 2]})["any"]
        assert grouped["fp"] == class_scores(kept_pred[k], kept_truth[k], CLASSES, {"any": [1, 2]})["any"]["fp"]


def test_an_out_of_range_label_is_still_refused_beside_the_ignore_label():
    truth = with_ignored_columns(np.zeros((4, 8), np.uint8))
    truth[0, 7] = 3
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):
        per_class_scores(np.zeros((4, 8), np.uint8), truth, 3)


def test_training_with_ignored_pixels_is_deterministic_and_learns_as_well_as_with_every_label():
    train, valid = toy_set(12, 0), toy_set(4, 1)
    cfg = small_cfg(epochs=6)
    _, full = train_once(cfg, train, valid)
    train.labels[:] = with_ignored_columns(train.labels)
    valid.labels[:] = with_ignored_columns(valid.labels)
    _, a = train_once(cfg, train, valid)
    _, b = train_once(cfg, train, valid)
    for key in a.best_state:
        assert torch.equal(a.best_state[key], b.best_state[key]), key
    assert a.best_dice > 0.8 * full.best_dice  # a sixth of the pixels unlabelled costs little
