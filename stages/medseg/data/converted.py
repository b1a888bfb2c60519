"""The converted dataset (``data/converted/<name>/``): written by convert, read by every later stage.

On disk:

- ``images/<id>.png``: 8-bit grey or RGB, as the dataset's ``channels`` say;
- ``labels/<id>.png``: uint8 class indices in the order of ``classes`` (0 = background);
  where the dataset declares an ignore label (``convert.ignore``), its pixels
  hold ``IGNORE`` (255, never a class index: at most 255 classes);
- ``manifest.csv``: one row per image, sorted by id: ``id, group, image_class,
  image, label, height, width, source_image, source_mask, published_split``
  (train, valid or test as the dataset was published, empty when it came
  unsplit; manifests written before it read as empty) and ``px_<class>``
  (pixels per class), and with an ignore label ``ignore_pixels``; a dataset sliced from volumes adds ``volume, slice,
  spacing_x, spacing_y, spacing_z`` (the slice's volume id and z index, and
  its voxel size in mm) and writes ``volumes.json`` (``medseg.data.volumes``);
- ``report.json``: ``classes``, ``channels``, counts, skipped files, snapped
  pixels, quirks applied (see ``medseg.formats.convert``); with an ignore
  label ``ignore_label`` (= ``IGNORE``) and ``ignore_pixels``.

The writer side (``create``, ``write_sample``, ``manifest_row``,
``write_manifest``, ``write_report``) and the reader (``ConvertedDataset``)
live here together, so the file and column names are defined once.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.io.errors import DataError
from medseg.io.images import read_png, write_png
from medseg.io.tables import read_json, write_json

MANIFEST = "manifest.csv"
REPORT = "report.json"
IMAGES = "images"
LABELS = "labels"
COLUMNS = ("id", "group", "image_class", "image", "label", "height", "width", "source_image", "source_mask",
           "published_split")
VOLUME_COLUMNS = ("volume", "slice", "spacing_x", "spacing_y", "spacing_z")
_TEXT_COLUMNS = ("id", "group", "image_class", "published_split", "volume")
IGNORE = 255  # the label value of ignored pixels: no class, left out of the loss and every metric
IGNORE_COLUMN = "ignore_pixels"
_MISSING = "not found (run the convert stage first)"


def class_counts(label: np.ndarray, n_classes: int) -> tuple[np.ndarray, int]:
    """Pixels of each class in a label map, and its ignored pixels (``IGNORE``)."""
    counts = np.bincount(label.ravel(), minlength=max(n_classes, IGNORE + 1))
    return counts[:n_classes], int(counts[IGNORE])


# --------------------------------------------------------------------------- writing
def create(out: Path) -> None:
    """Make the image and label folders inside the (empty) output folder ``out``."""
    (Path(out) / IMAGES).mkdir(parents=True)
    (Path(out) / LABELS).mkdir()


def write_sample(out: Path, sid: str, image: np.ndarray, label: np.ndarray) -> None:
    """Write one image and its label map under ``out``."""
    write_png(Path(out) / IMAGES / f"{sid}.png", image)
    write_png(Path(out) / LABELS / f"{sid}.png", label)


def manifest_row(sid: str, group: str, image_class: str, shape: tuple[int, int], source_image: str,
                 source_mask: str, pixels: Sequence[int], classes: Sequence[str],
                 published_split: str = "", ignored: int | None = None) -> dict[str, Any]:
    """The manifest row of a sample written by ``write_sample``; ``published_split``: '' unless the dataset
    came split; ``ignored``: its ignored pixels, for a dataset with an ignore label."""
    extra = {} if ignored is None else {IGNORE_COLUMN: int(ignored)}
    return {"id": sid, "group": group, "image_class": image_class, "image": f"{IMAGES}/{sid}.png",
            "label": f"{LABELS}/{sid}.png", "height": shape[0], "width": shape[1], "source_image": source_image,
            "source_mask": source_mask, "published_split": published_split,
            **{f"px_{name}": int(n) for name, n in zip(classes, pixels, strict=True)}, **extra}


def volume_columns(volume: str, slice_index: int, spacing: Sequence[float]) -> dict[str, Any]:
    """The manifest columns of an image cut from a volume: its volume id, z index and (x, y, z) mm voxel size."""
    return dict(zip(VOLUME_COLUMNS, (volume, int(slice_index), *(round(float(s), 6) for s in spacing)), strict=True))


def write_manifest(out: Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Write the rows sorted by id; return the table."""
    manifest = pd.DataFrame(rows).sort_values("id", kind="stable")
    manifest.to_csv(Path(out) / MANIFEST, index=False)
    return manifest


def write_report(out: Path, report: dict[str, Any]) -> None:
    write_json(Path(out) / REPORT, report)


# --------------------------------------------------------------------------- reading
class ConvertedDataset:
    """A convert output, checked when opened; images are read on demand by ``read``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.report = _read_report(self.root / REPORT)
        self.manifest = _read_manifest(self.root / MANIFEST)  # sorted by id, plain index

    @property
    def classes(self) -> list[str]:
        return list(self.report["classes"])

    @property
    def channels(self) -> int:
        return int(self.report["channels"])

    @property
    def ignore(self) -> bool:
        """Whether label maps may hold ``IGNORE`` (the dataset declares an ignore label)."""
        return self.report.get("ignore_label") == IGNORE

    @property
    def ids(self) -> list[str]:
        return list(self.manifest["id"])

    @property
    def image_classes(self) -> list[str]:
        """The image-level class names that occur, sorted (``predict`` names a finding with them)."""
        return sorted(self.manifest["image_class"].unique())

    @cached_property
    def _rows(self) -> pd.DataFrame:
        return self.manifest.set_index("id")

    def row(self, sid: str) -> pd.Series:
        try:
            return self._rows.loc[sid]
        except KeyError:
            raise DataError(self.root / MANIFEST, f"no image with id {sid!r}") from None

    def sample(self, sid: str) -> SampleFiles:
        row = self.row(sid)
        return SampleFiles(id=sid, group=str(row["group"]), image_class=str(row["image_class"]),
                           image=self.root / row["image"], label=self.root / row["label"],
                           height=int(row["height"]), width=int(row["width"]), n_classes=len(self.classes),
                           channels=self.channels, ignore=self.ignore)

    def samples(self) -> list[SampleFiles]:
        """Every sample, by id."""
        return [self.sample(sid) for sid in self.ids]

    def read(self, sid: str) -> tuple[np.ndarray, np.ndarray]:
        """Image and label of ``sid``; see ``SampleFiles.read``."""
        return self.sample(sid).read()


@dataclass(frozen=True)
class SampleFiles:
    """One converted sample's files and what they must hold; small enough to send to a worker process."""

    id: str
    group: str
    image_class: str
    image: Path
    label: Path
    height: int
    width: int
    n_classes: int
    channels: int
    ignore: bool = False  # label maps may hold IGNORE

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W) or (H, W, 3) RGB and label (H, W), both uint8; ``DataError`` if anything is off."""
        image, label = read_png(self.image), read_png(self.label)
        channels = self.channels
        if channels == 1 and image.ndim != 2 or channels == 3 and (image.ndim != 3 or image.shape[2] != 3):
            raise DataError(self.image, f"expected {channels} channel(s), got shape {image.shape}")
        if label.ndim != 2:
            raise DataError(self.label, f"expected a single-channel label map, got shape {label.shape}")
        if label.shape != image.shape[:2] or label.shape != (self.height, self.width):
            raise DataError(self.label, f"size {label.shape} differs from image {image.shape[:2]} "
                                        f"or manifest {(self.height, self.width)}")
        allowed = set(range(self.n_classes)) | ({IGNORE} if self.ignore else set())
        if int(label.max()) >= self.n_classes and not allowed.issuperset(np.unique(label).tolist()):
            bad = sorted(set(np.unique(label).tolist()) - allowed)
            raise DataError(self.label, f"label values {bad} outside the {self.n_classes} classes "
                                        f"(0..{self.n_classes - 1})")
        return image, label


def _read_report(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(path, _MISSING)
    report = read_json(path)
    classes, channels = report.get("classes"), report.get("channels")
    if not isinstance(classes, list) or not 2 <= len(classes) <= 255 or not all(isinstance(c, str) for c in classes):
        raise DataError(path, f"'classes' must be a list of 2 to 255 names, got {classes!r}")
    if channels not in (1, 3):
        raise DataError(path, f"'channels' must be 1 or 3, got {channels!r}")
    return report


def _read_manifest(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=dict.fromkeys(_TEXT_COLUMNS, str), keep_default_na=False)
    except FileNotFoundError:
        raise DataError(path, _MISSING) from None
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable CSV: {exc}") from None
    required = COLUMNS[:7]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}; expected at least {list(required)}")
    not_int = [c for c in ("height", "width") if len(frame) and not pd.api.types.is_integer_dtype(frame[c])]
    if not_int:
        raise DataError(path, f"columns {not_int} must hold whole numbers")
    duplicated = frame["id"][frame["id"].duplicated()].tolist()
    if duplicated:
        raise DataError(path, f"duplicate ids {duplicated[:5]}")
    if (frame["id"] == "").any():
        raise DataError(path, "empty id")
    if "published_split" not in frame.columns:  # written before datasets could come split
        frame["published_split"] = ""
    return frame.sort_values("id", kind="stable").reset_index(drop=True)
