"""Leak audit of the split: near-duplicate images in different patient groups.

A patient-group split only keeps the test set unseen if one picture never
sits in two groups. Datasets break that quietly: the same scan exported
twice, a mirrored copy, a negative. The split stage therefore hashes every
converted image (``phash``: a DCT perceptual hash as imagehash's ``phash``,
the lowest ``hash_size`` x ``hash_size`` frequencies of the greyscale image
resized to ``4 * hash_size`` square) together with its horizontal flip and
its intensity inversion (255 - x), and compares every image's own hash
with every other image's three hashes.

Input: the converted dataset (``medseg.data.converted``) and
``split.audit``. Output: an ``Audit``: the pairs of images in different
groups whose hashes lie within ``max_distance`` bits (with the variant
that matched), and ``merged``, the map from each such group to the union
of all groups it is linked to, directly or through others (union-find),
which the split then treats as one group. ``write_audit`` writes it to
``data/split/<name>_audit.json``; with ``duplicates: refuse`` a match is a
``DataError`` instead, naming both files. The file also lists the groups
``split.predefined: respect`` moved off their published split
(``medseg.data.predefined``), since those are the split's other changes to
the groups as the data came.

A hash sees layout, not identity: images without structure (blank frames)
hash alike and would be merged. Scans that share a field of view (the fan
of a curvilinear probe, the round field of a fundus camera) differ in
detail only, so the 64-bit hash (``hash_size`` 8) puts distinct ones as
close as a JPEG re-encoding puts copies (4 bits); 256 bits keep them apart
by a wide margin (``tests/data/test_audit.py`` holds the measurements).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from medseg.config import PARAMS_FILE, AuditConfig
from medseg.data.converted import ConvertedDataset
from medseg.data.predefined import Move
from medseg.io.errors import DataError
from medseg.io.images import read_png
from medseg.io.tables import write_json

SHRINK = 4  # the image is reduced to (SHRINK * hash_size) square before the DCT, as imagehash does
# What an image is compared as: itself, mirrored left-right, and as a negative.
VARIANTS = ("same", "flip", "inversion")
MERGED_JOIN = "+"  # a merged group is named by its members, sorted and joined


# --------------------------------------------------------------------------- hashing
def phash(image: np.ndarray, size: int) -> np.ndarray:
    """``size``² bits (bool, row-major over the lowest ``size`` x ``size`` DCT frequencies) of a uint8 (H, W)
    or (H, W, 3) RGB image.

    A bit is set where the DCT coefficient exceeds the median of the AC
    coefficients. Leaving the DC term (the mean brightness) out of the median
    makes the hash of ``255 - x`` the complement of that of ``x``; the DC bit
    itself is always 0. With an odd number of AC terms every hash sets the
    same number of bits, so distances are even.
    """
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    side = SHRINK * size
    small = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:size, :size].ravel()
    bits = low > np.median(low[1:])
    bits[0] = False
    return bits


def variant_hashes(image: np.ndarray, size: int) -> np.ndarray:
    """(3, size²) bool: the hashes of the image, its horizontal flip and its inversion, in ``VARIANTS`` order."""
    return np.stack([phash(image, size), phash(image[:, ::-1], size), phash(255 - image, size)])


def hash_images(paths: list[Path], size: int) -> np.ndarray:
    """(N, 3, size²) bool hashes of the images at ``paths`` (a few ms per image: no worker pool needed)."""
    if not paths:
        return np.zeros((0, len(VARIANTS), size * size), bool)
    return np.stack([variant_hashes(read_png(p), size) for p in paths])


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances between rows of 0/1 float32 bit matrices (exact: small integers)."""
    return a @ (1 - b).T + (1 - a) @ b.T


def distances(hashes: np.ndarray, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """For images ``rows`` (i) against all images (j): the smallest Hamming distance between one image's own
    hash and any variant of the other (either way round), and the index in ``VARIANTS`` of the variant that
    gave it (the first on a tie)."""
    bits = hashes.astype(np.float32)
    per_variant = [np.minimum(_hamming(bits[rows, 0], bits[:, v]), _hamming(bits[rows, v], bits[:, 0]))
                   for v in range(len(VARIANTS))]
    stacked = np.stack(per_variant)
    return stacked.min(axis=0).astype(int), stacked.argmin(axis=0)


# --------------------------------------------------------------------------- matching and merging
@dataclass(frozen=True)
class Match:
    """Two images in different groups that look alike."""

    a: str
    b: str
    group_a: str
    group_b: str
    distance: int
    variant: str


@dataclass(frozen=True)
class Audit:
    """What the audit found; ``merged`` maps every group linked to another to its merged group's name."""

    config: AuditConfig
    images: int
    groups: int
    matches: list[Match] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)
    closest: int | None = None  # the smallest distance between images of different groups (None: off or < 2 groups)

    def group_of(self, group: str) -> str:
        return self.merged.get(group, group)


def cross_group_matches(ids: list[str], groups: list[str], hashes: np.ndarray, max_distance: int,
                        block: int = 512) -> tuple[list[Match], int | None]:
    """The pairs (a before b in ``ids``) in different groups within ``max_distance``, and the smallest distance
    between any two images of different groups (None when there is one group). Rows are compared ``block`` at a
    time, so memory stays at ``block`` x N whatever the dataset's size."""
    group = np.asarray(groups, dtype=object)
    found, closest = [], None
    for start in range(0, len(ids), block):
        rows = slice(start, min(start + block, len(ids)))
        dist, variant = distances(hashes, rows)
        i_index = np.arange(rows.start, rows.stop)[:, None]
        pairs = (group[rows, None] != group[None, :]) & (np.arange(len(ids))[None, :] > i_index)
        if not pairs.any():
            continue
        low = int(dist[pairs].min())
        closest = low if closest is None else min(closest, low)
        for i, j in zip(*np.nonzero(pairs & (dist <= max_distance)), strict=True):
            a = rows.start + i
            found.append(Match(ids[a], ids[j], groups[a], groups[j], int(dist[i, j]), VARIANTS[variant[i, j]]))
    return found, closest


def merge_groups(matches: list[Match]) -> dict[str, str]:
    """Union-find over the groups the matches link: group -> name of its merged group (members sorted, joined).

    Only linked groups appear; the result depends on the set of links, not their order.
    """
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        parent.setdefault(g, g)
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for m in matches:
        ra, rb = root(m.group_a), root(m.group_b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for g in parent:
        members.setdefault(root(g), []).append(g)
    return {g: MERGED_JOIN.join(sorted(names)) for names in members.values() for g in names}


def audit_duplicates(dataset: ConvertedDataset, cfg: AuditConfig) -> Audit:
    """Hash and compare every image of ``dataset``; ``DataError`` on a match when ``cfg.duplicates`` is refuse."""
    manifest = dataset.manifest
    n_groups = manifest["group"].nunique()
    if cfg.duplicates == "off":
        return Audit(cfg, len(manifest), n_groups)
    hashes = hash_images([dataset.root / p for p in manifest["image"]], cfg.hash_size)
    matches, closest = cross_group_matches(list(manifest["id"]), list(manifest["group"]), hashes, cfg.max_distance)
    if matches and cfg.duplicates == "refuse":
        raise DataError(PARAMS_FILE, _refusal(dataset, matches, cfg))
    return Audit(cfg, len(manifest), n_groups, matches, merge_groups(matches), closest)


def _refusal(dataset: ConvertedDataset, matches: list[Match], cfg: AuditConfig) -> str:
    pairs = "; ".join(f"{_file(dataset, m.a)} (group {m.group_a}) and {_file(dataset, m.b)} (group {m.group_b}): "
                      f"{m.variant}, distance {m.distance}" for m in matches[:5])
    more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
    return (f"split.audit.duplicates is refuse and {len(matches)} image pair(s) in different patient groups are "
            f"near-duplicates (hash distance <= {cfg.max_distance} of {cfg.hash_size ** 2} bits): {pairs}{more}. "
            "Fix the groups, or set split.audit.duplicates: merge to keep each pair on one side of the split")


def _file(dataset: ConvertedDataset, sid: str) -> str:
    """The converted image's path, and the file it was converted from when the manifest says."""
    row = dataset.row(sid)
    source = f" (from {row['source_image']})" if row.get("source_image") else ""
    return f"{dataset.root / row['image']}{source}"


# --------------------------------------------------------------------------- the audit file
def audit_record(audit: Audit, manifest: pd.DataFrame, moves: Sequence[Move] = ()) -> dict[str, Any]:
    """The JSON-ready record of ``audit``; ``manifest`` (the converted one) gives each image's files; ``moves``:
    the groups the published split put on several sides, moved whole."""
    rows = manifest.set_index("id")

    def image(sid: str, group: str) -> dict[str, str]:
        row = rows.loc[sid]
        return {"id": sid, "image": str(row["image"]), "source_image": str(row.get("source_image", "")),
                "group": group}

    merged = sorted(set(audit.merged.values()))
    size = audit.config.hash_size
    variants = [m.variant for m in audit.matches]
    return {
        "duplicates": audit.config.duplicates,
        "max_distance": audit.config.max_distance,
        "hash_size": size,
        "hash": f"DCT perceptual hash, {size * size} bits from {SHRINK * size}x{SHRINK * size} greyscale; "
                f"variants {list(VARIANTS)}",
        "counts": {"images": audit.images, "groups": audit.groups, "matches": len(audit.matches),
                   "by_variant": {v: variants.count(v) for v in VARIANTS},
                   "merged_groups": len(merged), "groups_after": audit.groups - len(audit.merged) + len(merged)},
        "closest_cross_group_distance": audit.closest,
        "matches": [{"a": image(m.a, m.group_a), "b": image(m.b, m.group_b), "distance": m.distance,
                     "variant": m.variant, "merged_group": audit.group_of(m.group_a)} for m in audit.matches],
        "merged_groups": [{"group": name, "members": sorted(g for g, m in audit.merged.items() if m == name)}
                          for name in merged],
        "predefined_moves": [m.record() for m in moves],
    }


def write_audit(path: Path, audit: Audit, manifest: pd.DataFrame, moves: Sequence[Move] = ()) -> None:
    write_json(path, audit_record(audit, manifest, moves))
