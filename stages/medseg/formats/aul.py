"""The Annotated Ultrasound Liver (AUL) layout and its polygon annotations.

AUL (Zenodo record 7272660) ships one folder per image class, each
``<Class>/image/N.jpg`` with ``<Class>/segmentation/{outline,liver,mass}/N.json``,
every JSON a flat list of ``[x, y]`` points. ``discover_aul`` finds the
samples, ``aul_label`` rasterises an image's liver and mass polygons into a
label map, applying the quirks params.yaml lists (images whose outline file
is the liver, an image without a liver polygon). Normal images have no mass.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from medseg.config import AulAnnotation
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .samples import Discovery, Sample, safe_id

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
POLYGON_KINDS = ("outline", "liver", "mass")


# --------------------------------------------------------------------------- layout
def _class_folder(root: Path, name: str) -> Path | None:
    """AUL zips may extract as ``<Class>/image`` or one level deeper."""
    candidates = [root / name, *sorted(root.glob(f"*/{name}"))]
    found = [c for c in candidates if (c / "image").is_dir()]
    return found[0] if found else None


def discover_aul(root: Path, ann: AulAnnotation) -> Discovery:
    samples, problems, notes = [], [], []
    folders = {name: _class_folder(root, name) for name in ann.image_classes}
    if not any(folders.values()):
        raise DataError(display_path(root), f"no AUL class folder found (expected one of {sorted(ann.image_classes)})")
    for name, folder in folders.items():
        if folder is None:
            notes.append(f"class folder {name!r} not present")
            continue
        for image in sorted((folder / "image").glob("*")):
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            seg = folder / "segmentation"
            polygons = {kind: seg / kind / f"{image.stem}.json" for kind in POLYGON_KINDS}
            polygons = {k: p for k, p in polygons.items() if p.is_file()}
            samples.append(Sample(id=safe_id(f"{name}_{image.stem}"), group="", image=image,
                                  polygons=polygons, folder=name))
    return Discovery(samples, problems, notes)


# --------------------------------------------------------------------------- polygons
def read_polygon(path: Path) -> np.ndarray | None:
    """Read an AUL polygon JSON (flat list of ``[x, y]``); ``None`` if it is empty."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(display_path(path), f"unreadable polygon JSON ({exc})") from None
    if data == []:
        return None
    ok = isinstance(data, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)
        for p in data
    )
    if not ok:
        raise DataError(display_path(path), "expected a flat list of [x, y] number pairs")
    points = np.asarray(data, np.float64)
    if not np.isfinite(points).all():
        raise DataError(display_path(path), "polygon has non-finite coordinates")
    if len(points) < 3:
        raise DataError(display_path(path), f"polygon has {len(points)} points; at least 3 are needed")
    return points


def rasterise(shape: tuple[int, int], polygons: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
    """Fill polygons in order (later ones on top) into a (H, W) uint8 label map.

    ``cv2.fillPoly`` fills concave and self-touching outlines; points are
    placed at pixel centres with 4 bits of sub-pixel precision.
    """
    label = np.zeros(shape, np.uint8)
    for points, class_id in polygons:
        fixed = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(label, [fixed], int(class_id), lineType=cv2.LINE_8, shift=4)
    return label


# --------------------------------------------------------------------------- label maps
def aul_label(sample: Sample, shape: tuple[int, int], ann: AulAnnotation,
              classes: list[str]) -> tuple[np.ndarray, str | None]:
    """The label map of one AUL image (liver, then its mass on top) and the quirk applied, if any."""
    number = sample.image.stem
    quirk = None
    liver_file = sample.polygons.get("liver")
    if number in ann.outline_is_liver:
        liver_file, quirk = sample.polygons.get("outline"), f"{sample.id}: liver taken from the outline file"
    liver = read_polygon(liver_file) if liver_file else None
    if liver is None:
        if number not in ann.missing_liver:
            raise DataError(display_path(liver_file or sample.image), "no liver polygon for this image")
        quirk = f"{sample.id}: has no liver polygon (known quirk)"
    polygons = [] if liver is None else [(liver, classes.index(ann.liver_class))]
    mass_file = sample.polygons.get("mass")
    mass_class = ann.mass_classes.get(sample.folder)
    if mass_class is None and mass_file is not None:
        raise DataError(display_path(mass_file),
                        f"mass annotation in folder {sample.folder!r}, which has no mass class")
    if mass_class is not None:
        mass = read_polygon(mass_file) if mass_file else None
        if mass is None:
            raise DataError(display_path(mass_file or sample.image), "no mass polygon for an image of a mass class")
        polygons.append((mass, classes.index(mass_class)))
    return rasterise(shape, polygons), quirk
