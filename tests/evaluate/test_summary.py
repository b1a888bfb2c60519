"""The compare stage's summary.md: every interval beside the images and patient groups it rests on."""
from __future__ import annotations

from medseg.evaluate.summary import markdown


def stat(mean: float, low: float, high: float, n: int, groups: int) -> dict:
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n, "n_groups": groups}


def test_each_class_and_the_mean_foreground_show_their_interval_images_and_groups() -> None:
    entry = {"images": 120, "groups": 60, "n_test": 20, "n_test_groups": 10, "mean_fg_dice": 0.75,
             "mean_fg_dice_ci": {"mean": 0.75, "ci_low": 0.7, "ci_high": 0.8, "n_images": 20, "n_groups": 10},
             "train_seconds": 30.0, "epochs_run": 2,
             "dice": {"liver": stat(0.9, 0.85, 0.95, 20, 10), "tumour": stat(0.6, 0.5, 0.7, 8, 5)},
             "iou": {"liver": stat(0.82, 0.8, 0.85, 20, 10), "tumour": stat(0.45, 0.4, 0.5, 8, 5)},
             "hd95": {"liver": stat(3.0, 2.0, 4.0, 20, 10),
                      "tumour": {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "n_groups": 0}}}
    text = markdown({"ct": entry})
    assert "| images scored | groups scored |" in text
    assert "| ct | tumour | 0.600 [0.500, 0.700] | 0.450 [0.400, 0.500] | n/a | 8 | 5 | 120 | 20 | 30 |" in text
    assert "| ct | mean foreground | 0.750 [0.700, 0.800] | - | - | 20 | 10 | 120 | 20 | 30 |" in text
