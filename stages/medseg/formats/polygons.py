"""A label map as regions an annotation tool can open: simplified polygons, or masks where a polygon cannot hold one.

``regions(label, tolerance, plane)`` turns every connected component
(8-neighbour) of every foreground class into a ``Region``: its outline
simplified with ``cv2.approxPolyDP`` within ``tolerance`` pixels, in the
coordinates of the format that will hold it (``plane="continuous"``: COCO
and CVAT, where a polygon is traced along the pixels' outer edges so that
filling it by pixel centres gives the component back; ``"indices"``:
LabelMe, where it runs through the boundary pixels, filled boundary
included). A component with a hole, or whose simplified outline crosses or
touches itself (a one-pixel neck), or that is too small for three points,
becomes a mask region instead: the format writes it as RLE or a mask, so
the round trip loses nothing but what simplification moves. The writers
are ``medseg.formats.coco.write_coco``, ``labelme.write_labelme`` and
``cvat.write_cvat``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .instances import crossing

Plane = Literal["continuous", "indices"]


@dataclass(frozen=True)
class Region:
    class_id: int
    polygon: np.ndarray | None = None  # (N, 2) x, y in the format's coordinates
    mask: np.ndarray | None = None  # (h, w) bool over the box at (left, top), when no polygon can hold it
    left: int = 0
    top: int = 0


def _outline(component: np.ndarray, tolerance: float, plane: Plane) -> np.ndarray | None:
    """The simplified outer outline of a hole-free component, or ``None`` when it makes no simple polygon."""
    if plane == "continuous":
        # Twice the resolution: the outline then runs a quarter pixel inside the outer pixel edges, so each
        # boundary pixel's centre lies inside it and each outside neighbour's centre outside.
        doubled = np.repeat(np.repeat(component, 2, axis=0), 2, axis=1).astype(np.uint8)
        contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        points = cv2.approxPolyDP(contours[0], 2 * tolerance, True).reshape(-1, 2) if tolerance else \
            contours[0].reshape(-1, 2)
        points = (points + 0.5) / 2
    else:
        contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        points = cv2.approxPolyDP(contours[0], tolerance, True).reshape(-1, 2) if tolerance else \
            contours[0].reshape(-1, 2)
        points = points.astype(np.float64)
    if len(points) < 3 or crossing(points) is not None:
        return None
    return points


def regions(label: np.ndarray, tolerance: float, plane: Plane) -> list[Region]:
    """The foreground components of a label map, class by class, as polygons or (when they must be) masks."""
    found = []
    for class_id in (int(c) for c in np.unique(label) if c > 0):
        count, parts, stats, _ = cv2.connectedComponentsWithStats((label == class_id).astype(np.uint8),
                                                                   connectivity=8)
        for k in range(1, count):
            x, y, w, h = (int(v) for v in stats[k, :4])
            component = parts[y:y + h, x:x + w] == k
            _, hierarchy = cv2.findContours(np.pad(component, 1).astype(np.uint8), cv2.RETR_CCOMP,
                                            cv2.CHAIN_APPROX_SIMPLE)
            holes = hierarchy is not None and (hierarchy[0][:, 3] >= 0).any()
            outline = None if holes else _outline(np.pad(component, 1), tolerance, plane)
            if outline is None:
                found.append(Region(class_id, mask=component, left=x, top=y))
            else:
                offset = np.array([x - 1, y - 1], np.float64)  # the one-pixel pad
                found.append(Region(class_id, polygon=outline + offset))
    return found
