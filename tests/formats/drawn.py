"""Expected label maps for the formats of drawn instances, computed without the code under test."""
from __future__ import annotations

import numpy as np
from matplotlib.path import Path as MplPath


def centres_inside(flat: list[float], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside the polygon on the continuous plane (pixel (x, y) spans [x, x+1)):
    the exact fill of a polygon whose edges run along pixel borders."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    return MplPath(np.reshape(flat, (-1, 2))).contains_points(centres).reshape(h, w)


def runs(flat: np.ndarray) -> list[int]:
    """Run lengths of alternating 0 and 1 over a flat 0/1 array, starting with a (maybe empty) run of 0."""
    flat = np.asarray(flat).astype(np.uint8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    lengths = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return lengths if flat[0] == 0 else [0, *lengths]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))
