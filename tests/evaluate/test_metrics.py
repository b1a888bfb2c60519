"""Metrics checked against values worked out by hand on tiny label maps."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.evaluate.metrics import confusion_matrix, hd95, per_class_scores, summarise, summarise_mean_over_classes

TARGET = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 2, 2],
        [0, 0, 0, 0],
    ]
)
PRED = np.array(
    [
        [1, 1, 1, 0],
        [1, 0, 0, 0],
        [0, 0, 2, 0],
        [0, 0, 0, 0],
    ]
)


def test_dice_and_iou_by_hand() -> None:
    scores = per_class_scores(PRED, TARGET, num_classes=4)
    assert sorted(scores) == [1, 2, 3]  # background is never scored
    # class 1: |GT| = 4, |pred| = 4, overlap 3 -> Dice 2*3/8, IoU 3/5
    assert scores[1]["dice"] == pytest.approx(0.75)
    assert scores[1]["iou"] == pytest.approx(0.6)
    assert (scores[1]["tp"], scores[1]["fp"], scores[1]["fn"]) == (3, 1, 1)
    # class 2: |GT| = 2, |pred| = 1, overlap 1 -> Dice 2/3, IoU 1/2
    assert scores[2]["dice"] == pytest.approx(2 / 3)
    assert scores[2]["iou"] == pytest.approx(0.5)


def test_class_absent_from_both_is_undefined_not_perfect() -> None:
    score = per_class_scores(PRED, TARGET, num_classes=4)[3]
    assert math.isnan(score["dice"]) and math.isnan(score["iou"]) and math.isnan(score["hd95"])
    assert score["gt_empty"] and score["pred_empty"]
    assert not score["false_positive"] and not score["false_negative"]


def test_prediction_without_ground_truth_is_a_false_positive() -> None:
    target = np.zeros((4, 4), dtype=np.uint8)
    pred = np.zeros((4, 4), dtype=np.uint8)
    pred[0, 0] = 1
    score = per_class_scores(pred, target, num_classes=2)[1]
    assert math.isnan(score["dice"]) and math.isnan(score["hd95"])
    assert score["false_positive"] and score["gt_empty"] and not score["pred_empty"]


def test_missed_structure_scores_zero_and_has_no_distance() -> None:
    score = per_class_scores(np.zeros((4, 4), dtype=int), TARGET, num_classes=3)[1]
    assert score["dice"] == 0.0 and score["iou"] == 0.0
    assert math.isnan(score["hd95"])
    assert score["false_negative"] and score["pred_empty"] and not score["gt_empty"]


def _square(col: int) -> np.ndarray:
    mask = np.zeros((20, 20), dtype=np.int64)
    mask[5:10, col : col + 5] = 1
    return mask


def test_hd95_of_a_shifted_square() -> None:
    # A 5x5 square moved 3 columns. Of its 16 boundary pixels, the 5 on the trailing
    # edge are 3 from the other boundary (the rest are 0-2), so more than 5% sit at
    # the maximum and the 95th percentile is exactly the shift, in both directions.
    score = per_class_scores(_square(8), _square(5), num_classes=2)[1]
    assert score["hd95"] == pytest.approx(3.0)
    assert score["dice"] == pytest.approx(2 * 10 / 50)


def test_hd95_uses_the_pixel_spacing() -> None:
    # spacing is per axis (rows, columns); the shift is along columns.
    assert hd95(_square(8) == 1, _square(5) == 1, spacing=(1.0, 0.5)) == pytest.approx(1.5)
    assert hd95(_square(8) == 1, _square(5) == 1, spacing=(2.0, 1.0)) == pytest.approx(3.0)


def test_hd95_of_parallel_lines_is_their_distance() -> None:
    a, b = np.zeros((10, 10), dtype=bool), np.zeros((10, 10), dtype=bool)
    a[2, 2:9] = True
    b[6, 2:9] = True
    assert hd95(a, b) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (np.zeros((4, 4), dtype=int), np.zeros((4, 5), dtype=int), "shapes differ"),
        (np.full((4, 4), 3), np.zeros((4, 4), dtype=int), "0..2"),
        (np.zeros((4, 4)), np.zeros((4, 4), dtype=int), "integer"),
    ],
)
def test_bad_label_maps_are_refused(pred: np.ndarray, target: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        per_class_scores(pred, target, num_classes=3)
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, target, num_classes=3)


def test_confusion_matrix_by_hand() -> None:
    expected = np.array(
        [
            [9, 1, 0, 0],  # 10 background pixels, one predicted as class 1
            [1, 3, 0, 0],
            [1, 0, 1, 0],
            [0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(PRED, TARGET, num_classes=4), expected)


def test_summarise_ignores_nan() -> None:
    stats = summarise([0.2, 0.4, float("nan"), 0.6, 0.8])
    assert stats["n"] == 4
    assert stats["mean"] == pytest.approx(0.5)
    assert stats["std"] == pytest.approx(math.sqrt(0.2 / 3))  # sample std: (0.09+0.01+0.01+0.09)/3
    assert 0.2 <= stats["ci_low"] < stats["mean"] < stats["ci_high"] <= 0.8


def test_summarise_is_deterministic_per_seed() -> None:
    values = list(np.linspace(0.3, 0.9, 25))
    assert summarise(values, seed=1) == summarise(values, seed=1)
    assert summarise(values, seed=1)["ci_low"] != summarise(values, seed=2)["ci_low"]


def test_summarise_degenerate_inputs() -> None:
    empty = summarise([float("nan")])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["ci_low"])
    single = summarise([0.7])
    assert single["n"] == 1 and math.isnan(single["std"])
    assert single["ci_low"] == single["ci_high"] == pytest.approx(0.7)


# --------------------------------------------------------------------------- intervals over patient groups
def _width(stats: dict) -> float:
    return stats["ci_high"] - stats["ci_low"]


def test_copies_within_a_group_widen_the_interval_to_that_of_the_distinct_images() -> None:
    """Each image duplicated (a mirrored copy in its group): resampling images doubles the apparent sample and
    narrows the interval by about sqrt(2); resampling groups gives exactly the interval of the distinct images."""
    distinct = list(np.random.default_rng(3).uniform(0.5, 0.95, 30))
    copies = [v for v in distinct for _ in range(2)]
    groups = [f"patient_{i:02d}" for i in range(30) for _ in range(2)]
    by_image = summarise(copies, n_boot=2000, seed=7)
    by_group = summarise(copies, n_boot=2000, seed=7, groups=groups)
    assert by_group["mean"] == by_image["mean"] == pytest.approx(np.mean(distinct))
    assert _width(by_group) > 1.25 * _width(by_image)
    alone = summarise(distinct, n_boot=2000, seed=7)
    assert (by_group["ci_low"], by_group["ci_high"]) == pytest.approx((alone["ci_low"], alone["ci_high"]), abs=1e-12)
    assert (by_group["n"], by_group["n_images"], by_group["n_groups"]) == (60, 60, 30)
    assert (by_image["n_images"], by_image["n_groups"]) == (60, 60)


def test_one_image_per_group_is_the_image_bootstrap() -> None:
    values = list(np.linspace(0.3, 0.9, 12))
    groups = [f"g{i:02d}" for i in range(12)]   # named in the values' order
    assert summarise(values, seed=5, groups=groups) == summarise(values, seed=5)


def test_groups_and_images_are_counted_over_scored_values_only() -> None:
    stats = summarise([0.1, 0.2, float("nan"), 0.3, float("nan")], groups=["a", "a", "b", "c", "c"])
    assert (stats["n"], stats["n_images"], stats["n_groups"]) == (3, 3, 2)   # b scores nothing
    volumes = summarise([0.5, 0.7], groups=["v1", "v2"], unit="volumes")
    assert volumes["n_volumes"] == 2 and volumes["n_groups"] == 2 and "n_images" not in volumes
    empty = summarise([float("nan")], groups=["a"])
    assert (empty["n_images"], empty["n_groups"]) == (0, 0) and math.isnan(empty["ci_low"])


def test_the_group_interval_is_seeded_and_ignores_row_order() -> None:
    rng = np.random.default_rng(0)
    values, groups = rng.uniform(0, 1, 40), [f"p{k}" for k in rng.integers(0, 9, 40)]
    first = summarise(values, seed=11, groups=groups)
    assert summarise(values, seed=11, groups=groups) == first
    assert summarise(values, seed=12, groups=groups)["ci_low"] != first["ci_low"]
    order = rng.permutation(40)
    shuffled = summarise(values[order], seed=11, groups=np.asarray(groups)[order])
    assert (shuffled["ci_low"], shuffled["ci_high"]) == pytest.approx((first["ci_low"], first["ci_high"]), abs=1e-12)


def test_groups_must_be_one_per_value() -> None:
    with pytest.raises(ValueError, match="one group per value"):
        summarise([0.1, 0.2], groups=["a"])


def test_mean_over_classes_by_hand() -> None:
    """Group a: one image, class 1 only (0.8). Group b: one image, 0.4 and 0.6. Resamples {a,a}: 0.8 (class 2
    absent, left out), {b,b}: 0.5, {a,b}: (0.6 + 0.6) / 2 = 0.6; {a,a} and {b,b} each come a quarter of the
    time, so the 95% interval spans them."""
    scores = np.array([[0.8, np.nan], [0.4, 0.6], [np.nan, np.nan]])
    stats = summarise_mean_over_classes(scores, n_boot=1000, seed=0, groups=["a", "b", "c"])
    assert stats["mean"] == pytest.approx((0.6 + 0.6) / 2)
    assert (stats["ci_low"], stats["ci_high"]) == pytest.approx((0.5, 0.8))
    assert (stats["n_images"], stats["n_groups"]) == (2, 2)   # c scores no class
    one = summarise_mean_over_classes(scores[:2], groups=["a", "a"])
    assert one["ci_low"] == one["ci_high"] == pytest.approx(one["mean"]) == pytest.approx(0.6)   # one group
    assert (one["n_images"], one["n_groups"]) == (2, 1)
