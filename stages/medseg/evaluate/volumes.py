"""Per-volume 3D scores: the test slices of a dataset sliced from CT volumes, stacked back into volumes.

Where the converted dataset has ``volumes.json`` (``medseg.data.volumes``),
``score_volumes`` puts every scored slice's prediction and truth back at its
z index in its volume (the manifest's ``volume`` and ``slice``; pixel to
voxel by ``image_to_voxel``) and scores each volume in 3D with the voxel
spacing of ``volumes.json``: Dice, IoU and HD95 in millimetres per class and
per combined group (``scoring.class_scores``). Slices of all rounds are
pooled, so with cross-validation a volume is whole again even where its
slices were tested by different rounds' models.

What a volume's score covers: the slices scored, i.e. the volume's test
slices, at their own z positions. Every other slice (left out by convert's
``empty_fraction``, or in train or valid) is blank in both prediction and
truth, so it adds nothing to Dice and no surface to HD95; truth is never
taken from slices the model did not see, and a false positive on such a
slice goes unseen. ``slices`` and ``depth`` in ``per_volume.csv`` say how
much of each volume that is (set ``volume.empty_fraction: 1`` to score
whole volumes under patient-level groups).

Empty masks follow ``medseg.evaluate.metrics``: a class absent from a
volume's truth does not enter that class's mean Dice (``false_positive`` if
it is predicted anyway); a class in truth that is not predicted scores Dice
0 and has no HD95, counted under ``missed`` instead. So ``hd95_mm`` averages
the volumes where both truth and prediction hold the class, and its ``n``
says how many.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from medseg.data.converted import ConvertedDataset
from medseg.data.volumes import VolumeGeometry, image_to_voxel, read_volumes
from medseg.io.errors import DataError

from .metrics import summarise, summarise_mean_over_classes
from .scoring import class_scores, without_nan

COLUMNS = ("volume", "class", "slices", "depth", "folds", "dice", "iou", "hd95_mm", "gt_empty", "pred_empty",
           "false_positive", "false_negative", "tp", "fp", "fn")


def stack(volume: VolumeGeometry, slices: dict[int, tuple[np.ndarray, np.ndarray]],
          converted: ConvertedDataset) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z) prediction and truth volumes from ``{z: (pred image, truth image)}``; other slices blank."""
    pred, target = np.zeros(volume.shape, np.uint8), np.zeros(volume.shape, np.uint8)
    for k, (p, t) in slices.items():
        plane = image_to_voxel(p)
        if plane.shape != tuple(volume.shape[:2]) or not 0 <= k < volume.shape[2]:
            raise DataError(converted.root, f"slice {k} of volume {volume.id!r} is {p.shape[1]}x{p.shape[0]} "
                                            f"pixels, but volumes.json gives the volume {volume.shape}")
        pred[:, :, k], target[:, :, k] = plane, image_to_voxel(t)
    return pred, target


def score_volumes(preds: dict[str, np.ndarray], folds: dict[str, int], converted: ConvertedDataset,
                  classes: list[str], groups: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """``per_volume.csv``: a row per volume and class (then combined group) for the slices in ``preds``."""
    geometry = read_volumes(converted.root)
    rows = converted.manifest.set_index("id").loc[sorted(preds)]
    out = []
    for vid, part in rows.groupby("volume", sort=True):
        if vid not in geometry:
            raise DataError(converted.root, f"volume {vid!r} of the manifest is not in volumes.json")
        slices = {int(row["slice"]): (preds[sid], converted.read(sid)[1]) for sid, row in part.iterrows()}
        pred, target = stack(geometry[vid], slices, converted)
        scores = class_scores(pred, target, classes, groups, geometry[vid].spacing)
        used = ";".join(str(f) for f in sorted({folds[sid] for sid in part.index}))
        for name, s in scores.items():
            out.append({"volume": vid, "class": name, "slices": len(slices), "depth": geometry[vid].shape[2],
                        "folds": used, "hd95_mm": s["hd95"], **{k: s[k] for k in COLUMNS if k in s}})
    return pd.DataFrame(out, columns=list(COLUMNS))


def aggregate_volumes(per_volume: pd.DataFrame, classes: list[str], n_boot: int, seed: int,
                      groups: dict[str, list[int]] | None = None) -> dict:
    """``eval.json``'s ``volumes``: per class, the mean over volumes of Dice, IoU and HD95 (mm) with bootstrap
    intervals, the mean foreground Dice with its interval (``mean_fg_dice_ci``), and the volumes that missed the
    class or predicted it where truth has none.

    Convert gives each slice its volume's id as group (or its slab's, a part of the volume), so no group spans
    two volumes: the bootstrap resamples whole volumes, and each interval's ``n_groups`` is its ``n_volumes``.
    """
    scored = [*classes[1:], *(groups or {})]
    first = per_volume.drop_duplicates("volume")
    out: dict = {"n_volumes": len(first), "slices_scored": int(first["slices"].sum()),
                 "slices_in_volumes": int(first["depth"].sum())}
    for metric in ("dice", "iou", "hd95_mm"):
        out[metric] = {}
        for c in scored:
            rows = per_volume[per_volume["class"] == c]
            out[metric][c] = summarise(rows[metric].tolist(), max(n_boot, 1), seed, rows["volume"].to_numpy(),
                                       unit="volumes")
    dice = per_volume[per_volume["class"].isin(classes[1:])].pivot(index="volume", columns="class", values="dice")
    dice = dice.reindex(columns=classes[1:])
    out["mean_fg_dice_ci"] = summarise_mean_over_classes(dice.to_numpy(), max(n_boot, 1), seed,
                                                         dice.index.to_numpy(), unit="volumes")
    out["mean_fg_dice"] = out["mean_fg_dice_ci"]["mean"]
    out["missed"], out["false_positive"] = {}, {}
    for c in scored:
        rows = per_volume[per_volume["class"] == c]
        absent = rows[rows["gt_empty"]]
        out["missed"][c] = int(rows["false_negative"].sum())
        out["false_positive"][c] = {"volumes": len(absent),
                                    "rate": float(absent["false_positive"].mean()) if len(absent) else float("nan")}
    return without_nan(out)
