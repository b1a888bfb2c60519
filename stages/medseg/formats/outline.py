"""Outline drawings: closed contours drawn as pixels, filled into a label map.

A mask of this format is a drawing, not a label map: a ring (of any
thickness) of ink on black around each structure, as challenge data such as
fetal-head ellipses ships. ``fill_outlines`` (the ``outline`` codec of
``medseg.formats.masks``) finds the ink's contours with
their nesting (``cv2.findContours``, ``RETR_TREE``: a ring has an outer
boundary and, when closed, a hole inside it) and fills each ring with its
inside. With ``holes`` the nesting alternates: a ring inside a filled ring
outlines a hole, a ring inside that hole a region again; the rings stay
foreground. A ring that encloses nothing is open: the error names the file
and the two ends of the gap (the ring's two pixels farthest apart along it),
unless ``close_gaps`` (a morphological closing with a disk of that radius,
applied first) bridges it.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

import cv2
import numpy as np

from medseg.io.errors import DataError
from medseg.io.images import display_path

_NEXT, _PREV, _CHILD, _PARENT = range(4)  # the columns of cv2.findContours' hierarchy


def _depths(hierarchy: np.ndarray) -> list[int]:
    """How many contours enclose each contour (even: the outer boundary of an ink component; odd: a hole in one)."""
    depth = [-1] * len(hierarchy)
    for i in range(len(hierarchy)):
        chain, j = [], i
        while j >= 0 and depth[j] < 0:
            chain.append(j)
            j = int(hierarchy[j][_PARENT])
        d = depth[j] if j >= 0 else -1
        for k in reversed(chain):
            d += 1
            depth[k] = d
    return depth


def _filled(shape: tuple[int, int], contour: np.ndarray) -> np.ndarray:
    region = np.zeros(shape, np.uint8)
    cv2.drawContours(region, [contour], 0, 1, thickness=cv2.FILLED)
    return region.astype(bool)


def _ends(ink: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two pixels of a connected piece of ink farthest apart along it (8-neighbour steps): an open ring's ends."""
    ys, xs = np.nonzero(ink)
    pixels = set(zip(ys.tolist(), xs.tolist(), strict=True))

    def farthest(start: tuple[int, int]) -> tuple[int, int]:
        seen, queue, last = {start}, deque([start]), start
        while queue:
            last = y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    step = (y + dy, x + dx)
                    if step in pixels and step not in seen:
                        seen.add(step)
                        queue.append(step)
        return last

    first = farthest((int(ys[0]), int(xs[0])))
    second = farthest(first)
    return (first[1], first[0]), (second[1], second[0])


def _open_error(path: Path, component: np.ndarray, close_gaps: int) -> DataError:
    (x1, y1), (x2, y2) = _ends(component)
    ys, xs = np.nonzero(component)
    gap = max(float(np.hypot(x2 - x1, y2 - y1)) - 1.0, 1.0)
    hint = (f"set annotation.close_gaps to at least {int(np.ceil(gap / 2))} to bridge it" if close_gaps == 0 else
            f"annotation.close_gaps {close_gaps} does not bridge it")
    return DataError(display_path(path),
                     f"open outline: the contour at x={xs.min()}..{xs.max()}, y={ys.min()}..{ys.max()} encloses no "
                     f"region; its ends are at (x={x1}, y={y1}) and (x={x2}, y={y2}), a gap of about {gap:.0f} px; "
                     + hint)


def fill_outlines(ink: np.ndarray, holes: bool, path: Path, close_gaps: int = 0) -> np.ndarray:
    """A bool map of the regions the closed contours of ``ink`` (bool, H x W) enclose, rings included."""
    drawn = ink.astype(np.uint8)
    if close_gaps:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * close_gaps + 1, 2 * close_gaps + 1))
        # Pad so the closing treats the image edge as black, not as ink.
        pad = close_gaps + 1
        drawn = cv2.morphologyEx(cv2.copyMakeBorder(drawn, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0),
                                 cv2.MORPH_CLOSE, disk)[pad:-pad, pad:-pad]
    contours, hierarchy = cv2.findContours(drawn, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    region = np.zeros(ink.shape, bool)
    if not contours:
        return region
    links = hierarchy[0]
    depth = _depths(links)
    for i in sorted(range(len(contours)), key=depth.__getitem__):
        if depth[i] % 2:
            continue  # a hole of a ring: handled with its ring
        inside = _filled(ink.shape, contours[i])
        ring = inside & (drawn > 0)
        if links[i][_CHILD] < 0:
            raise _open_error(path, ring, close_gaps)
        if not holes or (depth[i] // 2) % 2 == 0:
            region |= inside
        else:  # the ring of a hole: it stays foreground, what it encloses does not
            region &= ~(inside & ~ring)
    return region
