"""Offline augmentation: seeded variants of every converted image, in array shards.

Input is a ``convert`` output folder: ``manifest.csv`` (``id, group,
image_class, image, label, height, width``), 8-bit image PNGs (grey or RGB),
uint8 label PNGs, and ``report.json`` (``classes``, ``channels``). For every
source image, ``cfg.copies`` variants are produced by one albumentations
pipeline (resize to ``cfg.size``, then geometry applied to image and mask
alike, then intensity changes applied to the image only, including a custom
acoustic shadow). The output folder receives:

- ``shards/part-NNNNN.npz``: ``images`` uint8 (N, H, W, C) in RGB order for
  C = 3, ``labels`` uint8 (N, H, W); at most ``cfg.shard_size`` samples each.
  Written with fixed zip timestamps, so a re-run gives byte-identical files.
- ``manifest.csv``: one row per sample (``id, source_id, group, image_class,
  copy, shard, index``), ordered by (source id, copy).
- ``preview.png``: originals and a few variants with their masks overlaid.
- ``augment.json``: counts, size, classes, channels, pixels per class.

Every sample is seeded from ``(cfg.seed, source id, copy)`` with SHA-256, so
the output does not depend on the number of workers or the order of work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import random
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np
import pandas as pd

from . import imageio, paths, visualize
from .parallel import ordered_map
from .config import AugmentConfig
from .errors import DataError

log = logging.getLogger(__name__)

STATS = paths.AUGMENT_STATS
MANIFEST_COLUMNS = ("id", "source_id", "group", "image_class", "copy", "shard", "index")
SOURCE_COLUMNS = ("id", "group", "image_class", "image", "label", "height", "width")
# Measured on 160 augmented AUL ultrasound samples at 256x256: stored, 21.0 MB
# written in ~50 ms; deflate level 1, 3.6 MB (the black surroundings of the
# fan and the label maps compress well) in ~180 ms; reading takes 45-90 ms
# either way. Levels 6 and 9 save under 3 % more but write 1.7x and 4x
# slower. A sixfold smaller DVC cache is worth ~1 ms per sample.
COMPRESS_SHARDS = True
_DEFLATE_LEVEL = 1
# Fixed zip member timestamp (the earliest zip allows): numpy's savez stamps
# the current time, which would change the DVC hash of every re-run.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- transforms
class AcousticShadow(A.ImageOnlyTransform):
    """Darken a band that runs from a random point down along the beam.

    Bone, gas and calcifications reflect almost all sound, so the tissue
    behind them (deeper, i.e. further down the image) shows dark. The band
    follows a ray from a virtual probe apex ``apex_above`` image heights above
    the top centre (a convex probe's fan; a large value gives the parallel
    beams of a linear probe) and widens with depth like the fan does. Rows at
    or above the start point are left untouched.
    """

    def __init__(
        self,
        max_width: float = 0.15,
        strength: tuple[float, float] = (0.3, 0.7),
        apex_above: float = 0.5,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        if not 0 < max_width <= 1:
            raise ValueError(f"max_width must be in (0, 1], got {max_width}")
        if not 0 <= strength[0] <= strength[1] <= 1:
            raise ValueError(f"strength must be (low, high) with 0 <= low <= high <= 1, got {strength}")
        if apex_above <= 0:
            raise ValueError(f"apex_above must be positive, got {apex_above}")
        self.max_width = max_width
        self.strength = tuple(strength)
        self.apex_above = apex_above

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        rng = self.py_random
        # Start inside the central region, where the imaged tissue usually is.
        return {
            "x0": rng.uniform(0.2, 0.8) * width,
            "y0": rng.uniform(0.15, 0.7) * height,
            "half_width": max(1.0, rng.uniform(0.3, 1.0) * self.max_width * width / 2),
            "darkening": rng.uniform(*self.strength),
        }

    def apply(
        self, img: np.ndarray, x0: float, y0: float, half_width: float, darkening: float, **params: Any
    ) -> np.ndarray:
        factor = shadow_factor(img.shape[:2], self.apex_above, x0, y0, half_width, darkening)
        top = math.floor(y0) + 1
        out = img.copy()
        below = img[top:].astype(np.float32)
        scale = factor[top:, :, None] if img.ndim == 3 else factor[top:]
        out[top:] = np.clip(np.rint(below * scale), 0, 255).astype(img.dtype)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_width", "strength", "apex_above")


class SectorBrightnessContrast(A.RandomBrightnessContrast):
    """``RandomBrightnessContrast`` that leaves pure black pixels black.

    Scanners blank everything outside the imaged sector (fundus cameras
    outside the field of view); the library's additive brightness would lift
    that frame to grey, a cue that never occurs in real images.
    """

    def apply(self, img: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        black = img == 0
        out = super().apply(img, *args, **params)
        out[black] = 0
        return out


def shadow_factor(
    shape: tuple[int, int], apex_above: float, x0: float, y0: float, half_width: float, darkening: float
) -> np.ndarray:
    """Per-pixel intensity factor (1 = unchanged) of a shadow starting at ``(x0, y0)``."""
    height, width = shape
    apex_x, apex_y = width / 2, -apex_above * height
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Depth along the ray relative to the start point: the band widens with it.
    spread = (ys - apex_y) / (y0 - apex_y)
    ray_x = apex_x + (x0 - apex_x) * spread
    lateral = np.abs(xs - ray_x) / (half_width * spread)
    # Flat core, soft edges: real shadows are not cut with a knife.
    across = np.clip((1.0 - lateral) / 0.3, 0.0, 1.0)
    # Fade in over a few rows below the reflector instead of a hard step.
    onset = np.clip((ys - y0) / max(2.0, 0.03 * height), 0.0, 1.0)
    return 1.0 - darkening * across * onset


def build_transform(cfg: AugmentConfig, record: bool = False) -> A.Compose:
    """The augmentation pipeline for ``cfg``; call it via ``augment_sample``.

    ``record`` makes ``augment_sample`` report which transforms fired (for
    the preview); it does not change the output.

    Resizing comes first so that pixel-valued parameters (elastic alpha and
    sigma, blur kernel) mean the same for every dataset, and the costly
    warps run on the small output size.
    """
    # Constant 0 borders: black is what an ultrasound scanner shows outside
    # the fan, and 0 is background in every label map.
    border = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}
    nearest = {"mask_interpolation": cv2.INTER_NEAREST}
    rs, sp = cfg.rotate_scale, cfg.speckle
    geometric = [
        _resize(cfg),
        A.HorizontalFlip(p=cfg.hflip.p),
        A.Affine(
            rotate=(-rs.rotate_deg, rs.rotate_deg),
            scale=(1 - rs.scale, 1 + rs.scale),
            translate_percent=(-rs.shift, rs.shift),
            p=rs.p,
            **border,
            **nearest,
        ),
        # Uniform noise keeps Simard et al.'s meaning of alpha (pixels);
        # albumentations' default Gaussian noise is max-normalised, which
        # shrinks the displacement about 2.5x.
        A.ElasticTransform(
            alpha=cfg.elastic.alpha, sigma=cfg.elastic.sigma, noise_distribution="uniform",
            p=cfg.elastic.p, **border, **nearest,
        ),
        A.GridDistortion(
            num_steps=cfg.grid.num_steps, distort_limit=cfg.grid.distort_limit, p=cfg.grid.p, **border, **nearest
        ),
    ]
    # Image-only, in the order the physics happens: attenuation in tissue,
    # speckle and beam blur at image formation, then the display's gain and gamma.
    intensity = [
        AcousticShadow(max_width=cfg.shadow.max_width, strength=cfg.shadow.strength, p=cfg.shadow.p),
        # Uniform on [1 - a, 1 + a] has standard deviation a / sqrt(3).
        A.MultiplicativeNoise(multiplier=(1 - math.sqrt(3) * sp.sigma, 1 + math.sqrt(3) * sp.sigma),
                              elementwise=True, per_channel=False, p=sp.p),
        A.GaussianBlur(blur_limit=(3, cfg.blur.max_kernel), p=cfg.blur.p),
        SectorBrightnessContrast(brightness_limit=cfg.gain.brightness, contrast_limit=cfg.gain.contrast,
                                 p=cfg.gain.p),
        A.RandomGamma(gamma_limit=(cfg.gamma.low * 100, cfg.gamma.high * 100), p=cfg.gamma.p),
    ]
    return A.Compose(geometric + intensity, mask_interpolation=cv2.INTER_NEAREST, save_applied_params=record)


def _resize(cfg: AugmentConfig) -> A.Resize:
    # Area averaging when shrinking, so speckle does not alias into moire.
    height, width = cfg.size
    return A.Resize(height, width, interpolation=cv2.INTER_LINEAR, area_for_downscale="image",
                    mask_interpolation=cv2.INTER_NEAREST)


def build_resize(cfg: AugmentConfig) -> A.Compose:
    """Resize only, exactly as ``build_transform`` does first (the preview's originals)."""
    return A.Compose([_resize(cfg)])


def sample_seed(seed: int, source_id: str, copy: int) -> int:
    """A 64-bit seed stable across processes and Python runs (unlike ``hash()``)."""
    digest = hashlib.sha256(f"{seed}\x00{source_id}\x00{copy}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class Augmented(NamedTuple):
    image: np.ndarray  # (h, w, C) uint8
    label: np.ndarray  # (h, w) uint8
    applied: tuple[str, ...]  # transforms that fired, when the pipeline records them


def augment_sample(transform: A.Compose, image: np.ndarray, label: np.ndarray, seed: int) -> Augmented:
    """Apply ``transform`` with its randomness fixed by ``seed``.

    ``image`` is (H, W) or (H, W, C) uint8, ``label`` (H, W) uint8; a 2-D
    image comes back as (h, w, 1).
    """
    # Compose(seed=...) and set_random_seed give every transform its own
    # generator with the same seed, so equal-p transforms fire together (all
    # or none). One shared generator makes their draws independent.
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = transform(image=image, mask=label)
    channels = 1 if image.ndim == 2 else image.shape[2]
    new_image = out["image"].reshape(*out["image"].shape[:2], channels)
    applied = tuple(name for name, _ in out.get("applied_transforms", ()))
    return Augmented(new_image, out["mask"], applied)


# --------------------------------------------------------------------------- reading
@dataclasses.dataclass(frozen=True)
class Source:
    """One row of the converted manifest, paths resolved."""

    id: str
    group: str
    image_class: str
    image: Path
    label: Path
    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class SourceSet:
    sources: tuple[Source, ...]
    classes: tuple[str, ...]
    channels: int


def load_sources(converted: Path) -> SourceSet:
    """Read and check a convert output's manifest and report; images are read later."""
    converted = Path(converted)
    report = _read_report(converted / paths.REPORT)
    frame = _read_manifest(converted / paths.MANIFEST)
    sources = tuple(
        Source(
            id=str(row.id), group=str(row.group), image_class=str(row.image_class),
            image=converted / str(row.image), label=converted / str(row.label),
            height=int(row.height), width=int(row.width),
        )
        for row in frame.sort_values("id").itertuples(index=False)
    )
    return SourceSet(sources=sources, classes=tuple(report["classes"]), channels=int(report["channels"]))


def _read_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "not found (run the convert stage first)") from None
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not readable JSON: {exc}") from None
    classes, channels = report.get("classes"), report.get("channels")
    if not isinstance(classes, list) or not 2 <= len(classes) <= 255 or not all(isinstance(c, str) for c in classes):
        raise DataError(path, f"'classes' must be a list of 2 to 255 names, got {classes!r}")
    if channels not in (1, 3):
        raise DataError(path, f"'channels' must be 1 or 3, got {channels!r}")
    return report


def _read_manifest(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"id": str, "group": str, "image_class": str}, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(path, "not found (run the convert stage first)") from None
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable CSV: {exc}") from None
    missing = [c for c in SOURCE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}; expected at least {list(SOURCE_COLUMNS)}")
    not_int = [c for c in ("height", "width") if len(frame) and not pd.api.types.is_integer_dtype(frame[c])]
    if not_int:
        raise DataError(path, f"columns {not_int} must hold whole numbers")
    duplicated = frame["id"][frame["id"].duplicated()].tolist()
    if duplicated:
        raise DataError(path, f"duplicate ids {duplicated[:5]}")
    if (frame["id"] == "").any():
        raise DataError(path, "empty id")
    return frame


def read_source(source: Source, n_classes: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W) or (H, W, 3) RGB and label (H, W), both uint8; ``DataError`` if anything is off."""
    image, label = _read_png(source.image), _read_png(source.label)
    if channels == 1 and image.ndim != 2 or channels == 3 and (image.ndim != 3 or image.shape[2] != 3):
        raise DataError(source.image, f"expected {channels} channel(s), got shape {image.shape}")
    if label.ndim != 2:
        raise DataError(source.label, f"expected a single-channel label map, got shape {label.shape}")
    if label.shape != image.shape[:2] or label.shape != (source.height, source.width):
        raise DataError(source.label, f"size {label.shape} differs from image {image.shape[:2]} "
                                      f"or manifest {(source.height, source.width)}")
    if int(label.max()) >= n_classes:
        bad = sorted(set(np.unique(label).tolist()) - set(range(n_classes)))
        raise DataError(source.label, f"label values {bad} outside the {n_classes} classes (0..{n_classes - 1})")
    return image, label


def _read_png(path: Path) -> np.ndarray:
    try:
        array = imageio.read_png(path)
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror}") from None
    if array.dtype != np.uint8:
        raise DataError(path, f"expected 8-bit pixels, got {array.dtype}")
    return array


# --------------------------------------------------------------------------- workers
@dataclasses.dataclass(frozen=True)
class _Job:
    source: Source
    cfg: AugmentConfig
    n_classes: int
    channels: int


@dataclasses.dataclass(frozen=True)
class _Result:
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    error: tuple[str, str] | None = None  # (path, problem): DataError itself does not pickle


@functools.lru_cache(maxsize=4)
def _cached_transform(cfg: AugmentConfig, record: bool = False) -> A.Compose:
    # Building the pipeline costs about as much as one sample; each process
    # builds it once. Safe because augment_sample resets its random state.
    return build_transform(cfg, record)


def augment_source(source: Source, cfg: AugmentConfig, n_classes: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``cfg.copies`` variants of one source: images (copies, h, w, C), labels (copies, h, w)."""
    image, label = read_source(source, n_classes, channels)
    transform = _cached_transform(cfg)
    height, width = cfg.size
    images = np.empty((cfg.copies, height, width, channels), np.uint8)
    labels = np.empty((cfg.copies, height, width), np.uint8)
    for copy in range(cfg.copies):
        images[copy], labels[copy], _ = augment_sample(transform, image, label, sample_seed(cfg.seed, source.id, copy))
    return images, labels


def _run_job(job: _Job) -> _Result:
    try:
        images, labels = augment_source(job.source, job.cfg, job.n_classes, job.channels)
    except DataError as exc:
        return _Result(error=(str(exc.path), exc.problem))
    return _Result(images=images, labels=labels)


def iter_augmented(
    source_set: SourceSet, cfg: AugmentConfig
) -> Iterator[tuple[Source, np.ndarray, np.ndarray]]:
    """Yield ``(source, images, labels)`` in source order, computed by ``cfg.workers`` processes.

    Raises ``DataError`` for the first bad source, in source order.
    """
    jobs = [_Job(s, cfg, len(source_set.classes), source_set.channels) for s in source_set.sources]
    results = ordered_map(_run_job, jobs, cfg.workers)
    with contextlib.closing(results):
        for source, result in zip(source_set.sources, results):
            if result.error is not None:
                raise DataError(*result.error)
            yield source, result.images, result.labels


# --------------------------------------------------------------------------- writing
def write_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool = COMPRESS_SHARDS) -> None:
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

    def __init__(self, out: Path, shard_size: int, compress: bool = COMPRESS_SHARDS) -> None:
        self.out = Path(out)
        self.shard_size = shard_size
        self.compress = compress
        self.rows: list[dict[str, Any]] = []
        self.shards: list[str] = []
        self._images: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def add(self, source: Source, copy: int, image: np.ndarray, label: np.ndarray) -> None:
        self.rows.append({
            "id": f"{source.id}__aug{copy:02d}", "source_id": source.id, "group": source.group,
            "image_class": source.image_class, "copy": copy,
            "shard": self._shard_name(len(self.shards)), "index": len(self._images),
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
        return f"{paths.SHARDS}/part-{number:05d}.npz"


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(path, index=False, lineterminator="\n")


# --------------------------------------------------------------------------- preview
_SHORT_NAMES = {
    "HorizontalFlip": "flip", "Affine": "affine", "ElasticTransform": "elastic", "GridDistortion": "grid",
    "AcousticShadow": "shadow", "MultiplicativeNoise": "speckle", "GaussianBlur": "blur",
    "SectorBrightnessContrast": "gain", "RandomGamma": "gamma",
}
_LINE_HEIGHT = 14  # pixels per caption line of visualize.caption


def _captioned(tile: np.ndarray, words: Sequence[str]) -> np.ndarray:
    """Caption ``tile`` with ``words``, wrapped to the tile's width."""
    lines: list[str] = []
    for word in words:
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] <= tile.shape[1] - 8:
            lines[-1] = candidate
        else:
            lines.append(word)
    for row, text in enumerate(lines):
        # caption() writes at the top left of the array it is given; a view
        # starting lower down puts the line there, drawn into ``tile`` itself.
        visualize.caption(tile[_LINE_HEIGHT * row:], text)
    return tile


def preview_sources(sources: Sequence[Source], rows: int = 4) -> list[Source]:
    """Up to ``rows`` sources, one per image class first, so every kind of image is shown."""
    chosen: dict[str, Source] = {}
    for source in sources:
        chosen.setdefault(source.image_class, source)
    picked = sorted(chosen.values(), key=lambda s: s.id)[:rows]
    extra = [s for s in sources if s not in picked]
    return picked + extra[: rows - len(picked)]


def render_preview(source_set: SourceSet, cfg: AugmentConfig, rows: int = 4, columns: int = 5) -> np.ndarray:
    """An RGB grid: per row one source, its resized original, then up to ``columns``
    variants captioned with the transforms that fired; a legend of class colours below."""
    resize = build_resize(cfg)
    transform = _cached_transform(cfg, record=True)
    grid_rows = []
    for source in preview_sources(source_set.sources, rows):
        image, label = read_source(source, len(source_set.classes), source_set.channels)
        original = resize(image=image, mask=label)
        tiles = [_captioned(visualize.overlay(original["image"], original["mask"]),
                            [source.id, f"({source.image_class})"])]
        for copy in range(min(columns, cfg.copies)):
            sample = augment_sample(transform, image, label, sample_seed(cfg.seed, source.id, copy))
            names = [_SHORT_NAMES[n] for n in sample.applied if n in _SHORT_NAMES]
            tiles.append(_captioned(visualize.overlay(sample.image, sample.label), [f"aug{copy:02d}:", *names]))
        grid_rows.append(tiles)
    if not grid_rows:
        return visualize.grid([[np.zeros((*cfg.size, 3), np.uint8)]], source_set.classes)
    return visualize.grid(grid_rows, source_set.classes)


# --------------------------------------------------------------------------- the stage
def augment_dataset(source_set: SourceSet, cfg: AugmentConfig, out: Path) -> dict[str, Any]:
    """Write shards, manifest, preview and stats for ``source_set`` into ``out``; return the stats."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, cfg.shard_size)
    pixels = _write_samples(source_set, cfg, writer)
    write_manifest(out / paths.MANIFEST, writer.rows)
    imageio.write_png(out / paths.PREVIEW, render_preview(source_set, cfg))
    stats = {
        "sources": len(source_set.sources),
        "copies": cfg.copies,
        "samples": len(writer.rows),
        "shards": len(writer.shards),
        "size": list(cfg.size),
        "channels": source_set.channels,
        "classes": list(source_set.classes),
        "class_pixels": dict(zip(source_set.classes, pixels.tolist())),
        "seed": cfg.seed,
        "compressed": COMPRESS_SHARDS,
    }
    (out / STATS).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def _write_samples(source_set: SourceSet, cfg: AugmentConfig, writer: ShardWriter) -> np.ndarray:
    """Augment every source into ``writer``; return the pixel count per class."""
    pixels = np.zeros(len(source_set.classes), np.int64)
    if cfg.copies == 0:
        return pixels
    # closing(): after an error here, stop the workers now, not at garbage collection.
    with contextlib.closing(iter_augmented(source_set, cfg)) as samples:
        for source, images, labels in samples:
            for copy in range(cfg.copies):
                writer.add(source, copy, images[copy], labels[copy])
            pixels += np.bincount(labels.ravel(), minlength=len(pixels))
    writer.flush()
    return pixels
