"""Per-volume 3D scores: boxes of known offset on anisotropic grids, whose Dice and HD95 (mm) are worked out by hand.

Two boxes, one shifted by ``d`` voxels along the axis of smallest spacing
``s``: every boundary voxel of one box lies 0, 1, ..., or ``d`` voxels from
the other's boundary along that axis, and nearer across the other axes is
impossible (their spacing is larger). The faces that stick out (more than 5%
of each boundary) lie exactly ``d`` voxels off, so HD95 = ``d * s`` mm.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medseg.data import converted
from medseg.data.converted import ConvertedDataset
from medseg.data.volumes import VolumeGeometry, has_volumes, read_volumes, voxel_to_image, write_volumes
from medseg.evaluate.metrics import per_class_scores
from medseg.evaluate.summary import markdown
from medseg.evaluate.volumes import aggregate_volumes, score_volumes

CLASSES = ["background", "liver", "tumour"]


def box(shape: tuple[int, int, int], lo: tuple[int, int, int], size: tuple[int, int, int], value: int = 1,
        into: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros(shape, np.uint8) if into is None else into
    out[tuple(slice(a, a + n) for a, n in zip(lo, size, strict=True))] = value
    return out


def test_volume_hd95_of_boxes_two_slices_apart_is_two_slice_spacings_in_mm() -> None:
    shape = (18, 18, 12)
    truth = box(shape, (4, 4, 3), (10, 10, 4))
    pred = box(shape, (4, 4, 5), (10, 10, 4))  # two slices up
    s = per_class_scores(pred, truth, 2, spacing=(2.0, 2.0, 0.5))[1]
    assert s["dice"] == pytest.approx(2 * 200 / 800)  # 10 x 10 x 2 voxels overlap, 400 each
    assert s["hd95"] == pytest.approx(2 * 0.5)
    assert per_class_scores(pred, truth, 2)[1]["hd95"] == pytest.approx(2.0)  # no spacing: voxels
    # The spacing belongs to its axis: the same offset along an axis of 2 mm voxels is 4 mm.
    assert per_class_scores(pred, truth, 2, spacing=(0.5, 2.0, 2.0))[1]["hd95"] > 2.0


def converted_volume(root: Path, truth: np.ndarray, spacing: tuple[float, float, float], vid: str = "v1") -> list[str]:
    """``truth`` (x, y, z) written as a converted dataset's slices, with its volumes.json; the slice ids."""
    if not (root / converted.IMAGES).is_dir():
        converted.create(root)
    rows, ids = [], []
    for k in range(truth.shape[2]):
        sid = f"{vid}_z{k:04d}"
        label = voxel_to_image(truth[:, :, k])
        converted.write_sample(root, sid, np.zeros(label.shape, np.uint8), label)
        counts = np.bincount(label.ravel(), minlength=len(CLASSES))
        rows.append({**converted.manifest_row(sid, vid, "liver", label.shape, "img", "lab", counts, CLASSES),
                     **converted.volume_columns(vid, k, spacing)})
        ids.append(sid)
    manifest = root / converted.MANIFEST
    old = pd.read_csv(manifest).to_dict("records") if manifest.is_file() else []
    converted.write_manifest(root, old + rows)
    converted.write_report(root, {"classes": CLASSES, "channels": 1, "count": len(old) + len(rows)})
    geometry = VolumeGeometry(vid, truth.shape, tuple(tuple(r) for r in np.diag([*spacing, 1.0]).tolist()), spacing,
                              truth.shape, tuple(tuple(r) for r in np.eye(4).tolist()), tuple(range(truth.shape[2])),
                              "img", ("lab",))
    known = list(read_volumes(root).values()) if has_volumes(root) else []
    write_volumes(root, [*known, geometry])
    return ids


def predictions(pred: np.ndarray, ids: list[str], keep: range | None = None) -> dict[str, np.ndarray]:
    return {sid: voxel_to_image(pred[:, :, k]) for k, sid in enumerate(ids) if keep is None or k in keep}


def test_volume_scores_stack_slices_back_with_the_in_plane_axes_in_their_place(tmp_path: Path) -> None:
    shape, spacing = (12, 16, 14), (0.6, 1.4, 3.0)
    truth = box(shape, (3, 3, 2), (4, 10, 10))
    pred = box(shape, (4, 3, 2), (4, 10, 10))  # one voxel along x (image columns), the axis of 0.6 mm
    ids = converted_volume(tmp_path, truth, spacing)
    data = ConvertedDataset(tmp_path)
    table = score_volumes(predictions(pred, ids), dict.fromkeys(ids, -1), data, CLASSES)
    liver = table[table["class"] == "liver"].iloc[0]
    assert liver["dice"] == pytest.approx(2 * 300 / 800)
    assert liver["hd95_mm"] == pytest.approx(0.6)  # 1.4 had the stacking swapped rows and columns
    assert (liver["slices"], liver["depth"], liver["folds"]) == (14, 14, "-1")


def test_volume_scores_cover_the_scored_slices_only(tmp_path: Path) -> None:
    shape, spacing = (12, 16, 14), (0.6, 1.4, 3.0)
    truth = box(shape, (3, 3, 2), (4, 10, 10))
    pred = box(shape, (4, 3, 2), (4, 10, 10))
    ids = converted_volume(tmp_path, truth, spacing)
    table = score_volumes(predictions(pred, ids, keep=range(0, 6)), dict.fromkeys(ids, 0), ConvertedDataset(tmp_path),
                          CLASSES)
    liver = table[table["class"] == "liver"].iloc[0]
    assert (liver["tp"], liver["fp"], liver["fn"]) == (3 * 10 * 4, 10 * 4, 10 * 4)  # z = 2..5 of the box
    assert liver["slices"] == 6 and liver["depth"] == 14


def test_volume_means_leave_out_absent_classes_and_count_misses(tmp_path: Path) -> None:
    shape, spacing = (18, 18, 12), (2.0, 2.0, 0.5)
    # v1: liver two slices off, tumour exact. v2: liver exact, no tumour in truth, none predicted.
    # v3: liver exact, a tumour in truth the model misses.
    t1 = box(shape, (4, 4, 3), (10, 10, 4))
    box(shape, (6, 6, 4), (3, 3, 2), 2, into=t1)
    p1 = box(shape, (4, 4, 5), (10, 10, 4))
    box(shape, (6, 6, 4), (3, 3, 2), 2, into=p1)
    t2 = box(shape, (2, 2, 2), (8, 8, 8))
    t3 = box(shape, (2, 2, 2), (8, 8, 8))
    box(shape, (4, 4, 4), (2, 2, 2), 2, into=t3)
    p3 = box(shape, (2, 2, 2), (8, 8, 8))
    preds, folds = {}, {}
    for vid, truth, pred, fold in (("v1", t1, p1, 0), ("v2", t2, t2, 1), ("v3", t3, p3, 2)):
        ids = converted_volume(tmp_path, truth, spacing, vid)
        preds.update(predictions(pred, ids))
        folds.update(dict.fromkeys(ids, fold))
    table = score_volumes(preds, folds, ConvertedDataset(tmp_path), CLASSES)
    assert sorted(table["volume"].unique()) == ["v1", "v2", "v3"]
    out = aggregate_volumes(table, CLASSES, 200, 0)
    assert out["n_volumes"] == 3 and out["slices_scored"] == out["slices_in_volumes"] == 36
    assert out["dice"]["tumour"]["n"] == 2  # v2 has no tumour: not in the mean
    assert out["dice"]["tumour"]["mean"] == pytest.approx((1.0 + 0.0) / 2)  # v1 exact, v3 missed
    assert out["hd95_mm"]["tumour"]["n"] == 1 and out["hd95_mm"]["tumour"]["mean"] == pytest.approx(0.0)
    assert out["missed"] == {"liver": 0, "tumour": 1}
    assert out["false_positive"]["tumour"] == {"volumes": 1, "rate": 0.0}
    # Liver lies two slices off in v1, exact in v2; in v3 the missed tumour was called liver.
    hd = table.set_index(["volume", "class"])["hd95_mm"]
    assert hd["v1", "liver"] == pytest.approx(1.0) and hd["v2", "liver"] == 0.0 and hd["v3", "liver"] > 0
    assert out["hd95_mm"]["liver"]["n"] == 3


def test_volume_scores_appear_beside_the_slice_scores_in_the_summary() -> None:
    stat = {"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 10, "n_groups": 2}
    entry = {"images": 45, "groups": 9, "n_test": 10, "n_test_groups": 2, "mean_fg_dice": 0.8,
             "mean_fg_dice_ci": {"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n_images": 10, "n_groups": 2},
             "train_seconds": 60.0, "epochs_run": 3,
             "dice": {"liver": stat}, "iou": {"liver": stat}, "hd95": {"liver": stat},
             "volumes": {"n_volumes": 1, "slices_scored": 10, "slices_in_volumes": 45, "mean_fg_dice": 0.85,
                         "missed": {"liver": 0},
                         "dice": {"liver": {"mean": 0.85, "ci_low": 0.85, "ci_high": 0.85, "n": 1}},
                         "hd95_mm": {"liver": {"mean": 12.5, "ci_low": 12.5, "ci_high": 12.5, "n": 1}}}}
    text = markdown({"ct": entry})
    assert "| ct | liver | 0.800 [0.700, 0.900] | 0.850 [0.850, 0.850] | 12.5 [12.5, 12.5] | 1 | 0 | 10 / 45 |" in text
    assert "Per volume" not in markdown({"ct": {k: v for k, v in entry.items() if k != "volumes"}})


def test_volume_slices_tested_by_different_rounds_are_pooled_into_one_volume(tmp_path: Path) -> None:
    """Cross-validation over slab groups: each round tests some slices of the volume; the volume is scored whole."""
    shape, spacing = (12, 16, 14), (0.6, 1.4, 3.0)
    truth = box(shape, (3, 3, 2), (4, 10, 10))
    pred = box(shape, (4, 3, 2), (4, 10, 10))
    ids = converted_volume(tmp_path, truth, spacing)
    folds = {sid: k // 5 for k, sid in enumerate(ids)}  # rounds 0, 1, 2 tested slices 0-4, 5-9, 10-13
    table = score_volumes(predictions(pred, ids), folds, ConvertedDataset(tmp_path), CLASSES)
    liver = table[table["class"] == "liver"].iloc[0]
    assert liver["folds"] == "0;1;2" and liver["slices"] == 14
    assert liver["dice"] == pytest.approx(0.75) and liver["hd95_mm"] == pytest.approx(0.6)  # as scored at once
