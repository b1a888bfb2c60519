"""The augmented dataset (``data/augmented/<name>/``): written by augment, read by split and train.

On disk:

- ``shards/part-NNNNN.npz``: ``images`` uint8 (N, H, W, C), RGB order for
  C = 3, and ``labels`` uint8 (N, H, W), at most ``shard_size`` samples each;
  written with fixed zip timestamps, so a re-run gives byte-identical files;
- ``manifest.csv``: one row per sample, ``id, source_id, group, image_class,
  copy, shard, index``, ordered by (source id, copy); a sample's id is
  ``<source id>__augNN``;
- ``augment.json``: counts, the training ``size``, classes, channels, pixels per class;
- ``preview.png``: originals and variants with their masks overlaid.

``ShardWriter`` and ``write_manifest``/``write_stats`` write it;
``AugmentedDataset`` reads it back. Shards are plain ``.npy`` members read
with ``allow_pickle=False``: no code is loaded from data files.
"""
from __future__ import annotations

import io
import logging
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.io.errors import DataError
from medseg.io.tables import read_csv, read_json, write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
STATS = "augment.json"
PREVIEW = "preview.png"
SHARDS = "shards"
COLUMNS = ("id", "source_id", "group", "image_class", "copy", "shard", "index")
# Measured on 160 augmented AUL ultrasound samples at 256x256: stored, 21.0 MB
# written in ~50 ms; deflate level 1, 3.6 MB (the black surroundings of the
# fan and the label maps compress well) in ~180 ms; reading takes 45-90 ms
# either way. Levels 6 and 9 save under 3 % more but write 1.7x and 4x
# slower. A sixfold smaller DVC cache is worth ~1 ms per sample.
COMPRESS = True
_DEFLATE_LEVEL = 1
# Fixed zip member timestamp (the earliest zip allows): numpy's savez stamps
# the current time, which would change the DVC hash of every re-run.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def sample_id(source_id: str, copy: int) -> str:
    """The id of augmented copy ``copy`` of source image ``source_id``."""
    return f"{source_id}__aug{copy:02d}"


# --------------------------------------------------------------------------- writing
def write_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool = COMPRESS) -> None:
    """Like ``np.savez[_compressed]``, but byte-identical for identical arrays (fixed timestamps)."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, allowZip64=True) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            archive.writestr(info, buffer.getbuffer(), compress_type=method,
                             compresslevel=_DEFLATE_LEVEL if compress else None)


class ShardWriter:
    """Collect samples and write them ``shard_size`` at a time; keep the manifest rows."""

    def __init__(self, out: Path, shard_size: int, compress: bool = COMPRESS) -> None:
        self.out = Path(out)
        self.shard_size = shard_size
        self.compress = compress
        self.rows: list[dict[str, Any]] = []
        self.shards: list[str] = []
        self._images: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def add(self, source_id: str, group: str, image_class: str, copy: int, image: np.ndarray,
            label: np.ndarray) -> None:
        self.rows.append({
            "id": sample_id(source_id, copy), "source_id": source_id, "group": group, "image_class": image_class,
            "copy": copy, "shard": self._shard_name(len(self.shards)), "index": len(self._images),
        })
        self._images.append(image)
        self._labels.append(label)
        if len(self._images) == self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._images:
            return
        name = self._shard_name(len(self.shards))
        (self.out / name).parent.mkdir(parents=True, exist_ok=True)
        write_npz(self.out / name, {"images": np.stack(self._images), "labels": np.stack(self._labels)}, self.compress)
        log.debug("wrote %s (%d samples)", name, len(self._images))
        self.shards.append(name)
        self._images, self._labels = [], []

    @staticmethod
    def _shard_name(number: int) -> str:
        return f"{SHARDS}/part-{number:05d}.npz"


def write_stats(out: Path, stats: dict[str, Any]) -> None:
    write_json(Path(out) / STATS, stats)


def write_manifest(out: Path, rows: list[dict[str, Any]]) -> None:
    """The manifest of the rows ``ShardWriter`` kept, columns in ``COLUMNS`` order (also when empty)."""
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(Path(out) / MANIFEST, index=False, lineterminator="\n")


# --------------------------------------------------------------------------- reading
class AugmentedDataset:
    """An augment output: its manifest and stats; ``load`` reads samples from the shards."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = read_csv(self.root / MANIFEST)

    @cached_property
    def stats(self) -> dict[str, Any]:
        return read_json(self.root / STATS)

    @property
    def size(self) -> tuple[int, int]:
        """The training (height, width) every sample, augmented or original, is resized to."""
        height, width = self.stats["size"]
        return int(height), int(width)

    def load(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, H, W, C) and labels (N, H, W) of the samples ``ids``, in that order."""
        if not ids:
            return np.zeros((0, *self.size, 1), np.uint8), np.zeros((0, *self.size), np.uint8)
        try:
            rows = self.manifest.set_index("id").loc[ids]
        except KeyError as exc:
            raise DataError(self.root / MANIFEST, f"no augmented sample {exc}") from None
        images, labels, got = [], [], []
        for shard, part in rows.groupby("shard", sort=True):
            with np.load(self.root / shard, allow_pickle=False) as data:
                index = part["index"].astype(int).to_numpy()
                images.append(data["images"][index])
                labels.append(data["labels"][index])
            got.extend(part.index)
        order = pd.Index(got).get_indexer(ids)
        return np.concatenate(images)[order], np.concatenate(labels)[order]
