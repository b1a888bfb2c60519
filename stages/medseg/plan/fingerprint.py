"""A dataset's fingerprint: what the plan needs to know about the converted images and label maps.

``fingerprint(converted)`` reads every image and label map once and returns
plain numbers (JSON-ready):

- ``images``, ``groups``, ``image_classes`` (images per image-level class);
- ``shape``: median, smallest and largest height and width, median aspect ratio (width / height);
- ``channels`` and ``intensity`` (mean, std, 1st and 99th percentile of the pixel values, 0..255);
- ``classes``: per foreground class, the fraction of all pixels, how many images
  contain it, its connected regions per image, their area (median, 10th and
  90th percentile, as a fraction of the image) and their **width** in pixels:
  ``2 * area / perimeter``, the mean width of a strip (a vessel of width w
  gives w) and half the diameter of a disc, so thin structures are never
  overestimated. Regions under ``MIN_REGION_PX`` pixels (annotation specks)
  are left out of the sizes.

With an ignore label the fractions are of the labelled pixels (ignored
ones left out) and ``ignore_fraction`` says how many of all pixels are ignored.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from medseg.data.converted import IGNORE_COLUMN, ConvertedDataset

MIN_REGION_PX = 10
_SAMPLE = 4096  # pixels per image sampled for the intensity percentiles


def _regions(mask: np.ndarray) -> list[tuple[float, float]]:
    """(area, width) of each connected region of a boolean mask, specks left out."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, count):
        area = float(stats[k, cv2.CC_STAT_AREA])
        if area < MIN_REGION_PX:
            continue
        region = (labels == k).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        perimeter = sum(cv2.arcLength(c, True) for c in contours)
        out.append((area, 2.0 * area / max(perimeter, 1.0)))
    return out


def _percentiles(values: list[float], qs: tuple[float, ...]) -> list[float | None]:
    if not values:
        return [None] * len(qs)
    return [round(float(v), 6) for v in np.percentile(values, qs)]


def fingerprint(converted: ConvertedDataset) -> dict[str, Any]:
    """Measure ``converted`` (see the module docstring)."""
    classes = converted.classes
    manifest = converted.manifest
    heights, widths = manifest["height"].to_numpy(), manifest["width"].to_numpy()
    rng = np.random.default_rng(0)
    samples = []
    found: dict[int, dict[str, list]] = {c: {"images": [], "regions": [], "areas": [], "widths": []}
                                         for c in range(1, len(classes))}
    for sid in converted.ids:
        image, label = converted.read(sid)
        flat = image.reshape(-1)
        samples.append(flat[rng.integers(0, flat.size, min(_SAMPLE, flat.size))])
        for c, seen in found.items():
            mask = label == c
            if not mask.any():
                continue
            regions = _regions(mask)
            seen["images"].append(sid)
            seen["regions"].append(len(regions))
            seen["areas"] += [a / label.size for a, _ in regions]
            seen["widths"] += [w for _, w in regions]
    pixels = np.concatenate(samples).astype(np.float64)
    total = float((heights * widths).sum())
    ignored = float(manifest[IGNORE_COLUMN].sum()) if converted.ignore else 0.0
    labelled = total - ignored  # pixel fractions are of the pixels that have a class
    per_class = {}
    for c, seen in found.items():
        name = classes[c]
        area_q = _percentiles(seen["areas"], (50, 10, 90))
        width_q = _percentiles(seen["widths"], (10, 50))
        per_class[name] = {
            "pixel_fraction": round(float(manifest[f"px_{name}"].astype(float).sum()) / max(labelled, 1.0), 6)
            if f"px_{name}" in manifest else None,
            "images": len(seen["images"]),
            "regions_per_image": round(float(np.mean(seen["regions"])), 3) if seen["regions"] else 0.0,
            "area_fraction": dict(zip(("median", "p10", "p90"), area_q, strict=True)),
            "width_px": dict(zip(("p10", "median"), width_q, strict=True)),
        }
    return {
        "images": len(converted.ids),
        "groups": int(manifest["group"].nunique()),
        "image_classes": {k: int(v) for k, v in sorted(manifest["image_class"].value_counts().items())},
        "channels": converted.channels,
        "shape": {"median": [int(np.median(heights)), int(np.median(widths))],
                  "min": [int(heights.min()), int(widths.min())], "max": [int(heights.max()), int(widths.max())],
                  "aspect": round(float(np.median(widths / heights)), 4)},
        "intensity": {"mean": round(float(pixels.mean()), 3), "std": round(float(pixels.std()), 3),
                      "p1": float(np.percentile(pixels, 1)), "p99": float(np.percentile(pixels, 99))},
        "classes": per_class,
        **({"ignore_fraction": round(ignored / total, 6)} if converted.ignore else {}),
    }
