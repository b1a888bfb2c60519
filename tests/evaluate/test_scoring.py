"""Scoring: per-image rows, the aggregate in eval.json, and the cross-validation summary."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medseg.evaluate.scoring import aggregate, cross_validation, pick_cases, predicted_image_class, score_image

CLASSES = ["background", "liver", "benign", "malignant"]
VOCAB = ["benign", "malignant", "normal"]


def test_predicted_image_class():
    assert predicted_image_class({"liver": 900, "benign": 10, "malignant": 30}, VOCAB) == "malignant"
    assert predicted_image_class({"liver": 900, "benign": 0, "malignant": 0}, VOCAB) == "normal"
    assert predicted_image_class({"lesion": 5}, ["malignant"]) == ""


def _image(pred_mass: int, gt_mass: int, mass_class: int) -> tuple[np.ndarray, np.ndarray]:
    target = np.zeros((10, 10), np.uint8)
    target[:, :5] = 1
    pred = target.copy()
    if gt_mass:
        target[0:gt_mass, 0:2] = mass_class
    if pred_mass:
        pred[0:pred_mass, 0:2] = mass_class
    return pred, target


def test_aggregate_by_hand_with_a_normal_image():
    rows = []
    # benign image: GT mass 4x2 = 8 px, predicted 2x2 = 4 px inside it -> dice 2*4/(4+8) = 2/3
    pred, target = _image(2, 4, 2)
    rows += score_image("b1", "benign", pred, target, CLASSES, VOCAB, group="p1").rows
    # normal image: no mass in GT, a 1x2 benign mass predicted -> false positive, no Dice
    pred, target = _image(1, 0, 2)
    rows += score_image("n1", "normal", pred, target, CLASSES, VOCAB, group="p1").rows
    # normal image predicted clean
    pred, target = _image(0, 0, 2)
    rows += score_image("n2", "normal", pred, target, CLASSES, VOCAB, group="p2").rows
    per_image = pd.DataFrame(rows)
    m = aggregate(per_image, CLASSES, n_boot=200, seed=0)
    assert m["n_test"] == 3 and m["n_test_groups"] == 2
    assert m["dice"]["benign"]["mean"] == pytest.approx(2 / 3) and m["dice"]["benign"]["n"] == 1
    assert (m["dice"]["benign"]["n_images"], m["dice"]["benign"]["n_groups"]) == (1, 1)
    assert (m["dice"]["liver"]["n_images"], m["dice"]["liver"]["n_groups"]) == (3, 2)
    assert m["dice"]["malignant"]["mean"] is None and m["dice"]["malignant"]["n"] == 0   # NaN -> null
    assert m["false_positive"]["benign"] == {"images": 2, "rate": 0.5}
    assert m["false_positive"]["malignant"] == {"images": 3, "rate": 0.0}
    # liver in b1: GT 50 - 8 mass px = 42, predicted 50 - 4 = 46, overlap 42 -> 84/88
    liver_b1 = 2 * 42 / (46 + 42)
    assert m["dice"]["liver"]["mean"] == pytest.approx((liver_b1 + 48 / 49 + 1.0) / 3, rel=1e-6)
    assert m["mean_fg_dice"] == pytest.approx((m["dice"]["liver"]["mean"] + 2 / 3) / 2)
    fg = m["mean_fg_dice_ci"]
    assert fg["mean"] == m["mean_fg_dice"] and (fg["n_images"], fg["n_groups"]) == (3, 2)
    assert fg["ci_low"] <= fg["mean"] <= fg["ci_high"]
    assert m["image_accuracy"] == pytest.approx(2 / 3)   # n1 predicted benign instead of normal
    assert m["empty_image_fp_rate"] is None   # every image has liver, so none is empty


def _copies(n: int, share_group: bool) -> pd.DataFrame:
    """``n`` patients, each scanned twice with the same result (a copy): a square lesion predicted shifted by
    a patient-specific amount, scored as two images of one group or of two groups."""
    rows = []
    for k in range(n):
        target = np.zeros((20, 20), np.uint8)
        target[4:14, 4:14] = 1
        pred = np.roll(target, k % 7, axis=1)
        for copy in ("a", "b"):
            group = f"p{k:02d}" if share_group else f"p{k:02d}{copy}"
            rows += score_image(f"p{k:02d}{copy}", "lesion", pred, target, ["background", "lesion"], ["lesion"],
                                group=group).rows
    return pd.DataFrame(rows)


def test_aggregate_resamples_patients_so_copies_do_not_narrow_the_interval():
    classes = ["background", "lesion"]
    grouped = aggregate(_copies(14, share_group=True), classes, n_boot=2000, seed=1)
    alone = aggregate(_copies(14, share_group=False), classes, n_boot=2000, seed=1)
    assert grouped["n_test"] == alone["n_test"] == 28
    assert (grouped["n_test_groups"], alone["n_test_groups"]) == (14, 28)
    for name, g, a in (("dice", grouped["dice"]["lesion"], alone["dice"]["lesion"]),
                       ("fg", grouped["mean_fg_dice_ci"], alone["mean_fg_dice_ci"])):
        assert g["mean"] == pytest.approx(a["mean"]), name
        assert g["ci_high"] - g["ci_low"] > 1.25 * (a["ci_high"] - a["ci_low"]), name
        assert (g["n_images"], g["n_groups"], a["n_groups"]) == (28, 14, 28), name
    assert aggregate(_copies(14, share_group=True), classes, n_boot=2000, seed=1) == grouped   # seeded


def test_pick_cases():
    per_image = pd.DataFrame({"id": ["a", "a", "b", "c"], "dice": [0.9, 0.7, 0.2, np.nan]})
    best, worst = pick_cases(per_image, 1)
    assert best == ["a"] and worst == ["b"]


def test_cross_validation_summarises_each_rounds_mean():
    rows = [{"fold": f, "id": f"{f}{i}", "class": c, "dice": d}
            for f, values in enumerate([(0.8, 0.6), (0.6, 0.4), (0.7, 0.5)])
            for i, (c, d) in enumerate(zip(["liver", "benign"], values, strict=True))]
    cv = cross_validation(pd.DataFrame(rows), ["background", "liver", "benign"], {})
    assert cv["folds"] == 3
    assert cv["dice"]["liver"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.1)}
    assert cv["per_fold_mean_fg_dice"] == [0.7, 0.5, 0.6]
    assert cv["mean_fg_dice"]["mean"] == pytest.approx(0.6)
