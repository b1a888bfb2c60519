"""Tests for ``medseg.augment`` and the ``augment`` stage.

Every test builds its own tiny ``convert`` output in ``tmp_path`` with
``make_converted``; nothing outside the repository is needed.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from medseg.augment.dataset import augment_dataset
from medseg.augment.transforms import AcousticShadow, Augmented, augment_sample, build_transform, sample_seed
from medseg.config import AugmentConfig
from medseg.data import converted, shards
from medseg.data.converted import ConvertedDataset
from medseg.data.preprocess import fit_pair
from medseg.io import paths
from medseg.io.errors import DataError

CLASSES = ("background", "liver", "mass")
OFF = {"p": 0.0}
ON = {"p": 1.0}
GEOMETRIC = ("hflip", "rotate_scale", "elastic", "grid")
INTENSITY = ("speckle", "gain", "gamma", "blur", "shadow")


# --------------------------------------------------------------------------- helpers
def make_label(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An off-centre liver ellipse with a mass inside: asymmetric, so a flip shows."""
    label = np.zeros((height, width), np.uint8)
    centre = (int(width * rng.uniform(0.35, 0.45)), int(height * rng.uniform(0.4, 0.5)))
    cv2.ellipse(label, centre, (width // 3, height // 4), 20, 0, 360, 1, -1)
    cv2.circle(label, (centre[0] + width // 10, centre[1]), min(height, width) // 9, 2, -1)
    return label


def make_image(label: np.ndarray, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Grey levels that depend on the class, plus texture; RGB order for 3 channels."""
    grey = (60 + 50 * label.astype(np.float32) + rng.normal(0, 8, label.shape)).clip(1, 255).astype(np.uint8)
    if channels == 1:
        return grey
    return np.dstack([grey, grey // 2, 255 - grey])


def make_converted(
    root: Path, count: int = 5, size: tuple[int, int] = (48, 64), channels: int = 1, classes: tuple = CLASSES
) -> Path:
    """Write a ``convert``-format folder (manifest, PNGs, report) and return it."""
    rng = np.random.default_rng(7)
    (root / converted.IMAGES).mkdir(parents=True, exist_ok=True)
    (root / converted.LABELS).mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(count):
        sid = f"case{number:03d}"
        label = make_label(*size, rng)
        image = make_image(label, channels, rng)
        stored = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if channels == 3 else image
        cv2.imwrite(str(root / converted.IMAGES / f"{sid}.png"), stored)
        cv2.imwrite(str(root / converted.LABELS / f"{sid}.png"), label)
        rows.append({"id": sid, "group": f"patient{number // 2}", "image_class": ["benign", "normal"][number % 2],
                     "image": f"{converted.IMAGES}/{sid}.png", "label": f"{converted.LABELS}/{sid}.png",
                     "height": size[0], "width": size[1]})
    pd.DataFrame(rows).to_csv(root / converted.MANIFEST, index=False)
    (root / converted.REPORT).write_text(json.dumps({"classes": list(classes), "channels": channels}))
    return root


def config(on: tuple[str, ...] = (), off: tuple[str, ...] = (), **fields) -> AugmentConfig:
    """AugmentConfig with the named transforms forced on (p=1) or off (p=0)."""
    values = {"size": (48, 64)} | {name: dict(ON) for name in on} | {name: dict(OFF) for name in off}
    for name, extra in fields.items():
        values[name] = {**values.get(name, {}), **extra} if isinstance(extra, dict) else extra
    return AugmentConfig(**values)


def run(cfg: AugmentConfig, image: np.ndarray, label: np.ndarray, seed: int = 0, transform=None) -> Augmented:
    """One variant, as the augment stage makes it: fitted into ``cfg.size``, then the random transforms."""
    transform = build_transform(cfg) if transform is None else transform
    return augment_sample(transform, *fit_pair(image, label, cfg.size), seed)


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    label = make_label(72, 96, rng)
    return make_image(label, 1, rng), label


# --------------------------------------------------------------------------- seeding
def test_sample_seed_is_stable_and_distinct() -> None:
    # A changed hash would silently change every augmented dataset.
    assert sample_seed(2026, "case000", 3) == sample_seed(2026, "case000", 3)
    assert sample_seed(0, "a", 0) == 3019835601215111317  # sha256(b"0\x00a\x000"), first 8 bytes LE
    seeds = {sample_seed(s, i, c) for s in (0, 1) for i in ("a", "b") for c in (0, 1)}
    assert len(seeds) == 8


def test_same_seed_gives_identical_arrays_whatever_the_global_rng(sample) -> None:
    cfg = config(on=GEOMETRIC + INTENSITY)
    transform = build_transform(cfg)
    image, label = sample
    first = run(cfg, image, label, 11, transform)
    random.seed(99)
    np.random.seed(99)
    np.random.random(10)
    second = run(cfg, image, label, 11)
    other = run(cfg, image, label, 12, transform)
    assert np.array_equal(first.image, second.image) and np.array_equal(first.label, second.label)
    assert not np.array_equal(first.image, other.image)


def test_transforms_fire_independently(sample) -> None:
    # Compose(seed=...) would seed each transform alike, so that transforms
    # with equal p always fire together; augment_sample must not.
    cfg = config(hflip={"p": 0.5}, speckle={"p": 0.5}, off=("rotate_scale", "elastic", "grid", "gain", "gamma",
                                                             "blur", "shadow"))
    transform = build_transform(cfg, record=True)
    image, label = sample
    combos = {frozenset(run(cfg, image, label, seed, transform).applied) for seed in range(40)}
    assert {"HorizontalFlip"} in [set(c) for c in combos]
    assert {"MultiplicativeNoise"} in [set(c) for c in combos]


def test_recording_applied_transforms_does_not_change_output(sample) -> None:
    cfg = config()
    image, label = sample
    plain = run(cfg, image, label, 5)
    recorded = run(cfg, image, label, 5, build_transform(cfg, record=True))
    assert np.array_equal(plain.image, recorded.image) and np.array_equal(plain.label, recorded.label)
    assert recorded.applied and plain.applied == ()


# --------------------------------------------------------------------------- geometry
def misaligned_pixels(image: np.ndarray, label: np.ndarray) -> int:
    """Pixels whose class, read back from an image of grey level 40 + 80 * class,
    disagrees with ``label`` more than 2 pixels away from any class boundary or
    border fill (nearer, interpolation legitimately blends the grey levels)."""
    fill = image[..., 0] == 0  # constant border fill and padding: image 0, mask background
    decoded = np.clip(np.rint((image[..., 0].astype(float) - 40) / 80), 0, 2)
    decoded[fill] = 0
    kernel = np.ones((5, 5), np.uint8)
    near_boundary = (cv2.dilate(label, kernel) != cv2.erode(label, kernel)) | (cv2.dilate(fill.astype(np.uint8),
                                                                                          kernel) > 0)
    return int(((decoded != label) & ~near_boundary).sum())


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometry_moves_image_and_mask_together(sample, name) -> None:
    _, label = sample
    image = (40 + 80 * label).astype(np.uint8)
    # The sample's own size: no resizing blends grey levels at class edges (which a strong elastic field
    # would then stretch into bands wider than the check's margin), and no padding edge.
    cfg = config(on=(name,), off=tuple(set(GEOMETRIC + INTENSITY) - {name}), size=label.shape,
                 elastic={"alpha": 300.0, "sigma": 8.0}, grid={"distort_limit": 0.4})
    transform = build_transform(cfg)
    for seed in range(3):
        out = run(cfg, image, label, seed, transform)
        assert misaligned_pixels(out.image, out.label) == 0
        assert (out.label != label).mean() > 0.03, "the transform hardly moved anything"


def test_geometry_check_would_catch_a_mask_left_behind(sample) -> None:
    _, label = sample
    image = (40 + 80 * label).astype(np.uint8)
    out = run(config(on=("hflip",), off=tuple(set(GEOMETRIC + INTENSITY) - {"hflip"}), size=image.shape), image,
              label)
    assert misaligned_pixels(out.image, out.label[:, ::-1]) > 500


def test_labels_are_never_invented(sample) -> None:
    # Sparse, non-consecutive values: linear interpolation would create 1, 3, 4.
    rng = np.random.default_rng(0)
    label = np.where(rng.random((72, 96)) < 0.5, 2, 0).astype(np.uint8)
    label[20:50, 30:70] = 5
    cfg = config(on=GEOMETRIC + INTENSITY, size=(40, 56))
    transform = build_transform(cfg)
    for seed in range(10):
        assert set(np.unique(run(cfg, sample[0], label, seed, transform).label)) <= {0, 2, 5}


def test_intensity_transforms_leave_the_mask_unchanged(sample) -> None:
    image, label = sample
    cfg = config(on=INTENSITY, off=GEOMETRIC, size=label.shape)
    transform = build_transform(cfg)
    for seed in range(5):
        out = run(cfg, image, label, seed, transform)
        assert np.array_equal(out.label, label)
        assert not np.array_equal(out.image[..., 0], image)


# --------------------------------------------------------------------------- shadow
@pytest.mark.parametrize("channels", [1, 3])
def test_shadow_darkens_only_below_its_start(channels) -> None:
    image = np.full((100, 120) if channels == 1 else (100, 120, 3), 200, np.uint8)
    shadow = AcousticShadow(max_width=0.2, strength=(0.5, 0.5), apex_above=0.5, p=1.0)
    out = shadow.apply(image, x0=60.0, y0=40.3, half_width=10.0, darkening=0.5)
    assert np.array_equal(out[:41], image[:41])
    assert (out <= image).all()
    assert out[90, 60].max() == 100  # fully inside the band, deep enough: 200 * (1 - 0.5)
    assert np.array_equal(out[:, :30], image[:, :30])  # far from the beam
    assert (out[60:, 60] < 200).all()


def test_shadow_in_a_pipeline_keeps_rows_above_untouched() -> None:
    image = np.full((64, 64), 180, np.uint8)
    label = np.zeros((64, 64), np.uint8)
    cfg = config(on=("shadow",), off=tuple(set(GEOMETRIC + INTENSITY) - {"shadow"}), size=(64, 64))
    transform = build_transform(cfg)
    for seed in range(5):
        out = run(cfg, image, label, seed, transform).image[..., 0]
        dark_rows = np.flatnonzero((out < 180).any(axis=1))
        assert dark_rows.size and (out[: dark_rows[0]] == 180).all()
        assert np.array_equal(out[dark_rows[0]:].min(axis=0) < 180, (out < 180).any(axis=0))


# --------------------------------------------------------------------------- dataset
def read_outputs(out: Path) -> tuple[pd.DataFrame, dict[str, bytes]]:
    manifest = pd.read_csv(out / shards.MANIFEST, dtype={"id": str, "source_id": str})
    files = {p.name: p.read_bytes() for p in sorted((out / shards.SHARDS).glob("*.npz"))}
    return manifest, files


def test_workers_1_and_2_write_byte_identical_shards(tmp_path) -> None:
    sources = ConvertedDataset(make_converted(tmp_path / "conv", count=5))
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        augment_dataset(sources, config(copies=3, shard_size=4, workers=workers, size=(32, 40)), out)
        outputs[workers] = read_outputs(out), (out / shards.MANIFEST).read_bytes()
    (manifest, files), manifest_bytes = outputs[1]
    assert outputs[2][1] == manifest_bytes
    assert outputs[2][0][1] == files
    assert list(files) == [f"part-{i:05d}.npz" for i in range(4)]  # 15 samples, 4 per shard


def test_manifest_points_at_the_right_arrays(tmp_path) -> None:
    conv = make_converted(tmp_path / "conv", count=3, channels=3)
    sources = ConvertedDataset(conv)
    cfg = config(copies=2, shard_size=4, size=(32, 40))
    out = tmp_path / "out"
    out.mkdir()
    stats = augment_dataset(sources, cfg, out)
    manifest = pd.read_csv(out / shards.MANIFEST, dtype=str)
    assert list(manifest.columns) == list(shards.COLUMNS)
    assert manifest["id"].tolist() == [f"case{i:03d}__aug{c:02d}" for i in range(3) for c in range(2)]
    transform = build_transform(cfg)
    for row in manifest.itertuples():
        with np.load(out / row.shard) as shard:
            image, label = shard["images"][int(row.index)], shard["labels"][int(row.index)]
            assert shard["images"].shape[1:] == (32, 40, 3) and shard["images"].dtype == np.uint8
            assert len(shard["images"]) <= cfg.shard_size
        expected = run(cfg, *sources.read(row.source_id), sample_seed(cfg.seed, row.source_id, int(row.copy)),
                       transform)
        assert np.array_equal(image, expected.image) and np.array_equal(label, expected.label)
    assert stats["samples"] == 6 and stats["shards"] == 2
    assert sum(stats["class_pixels"].values()) == 6 * 32 * 40


def test_rgb_is_stored_in_rgb_order(tmp_path) -> None:
    image, _ = ConvertedDataset(make_converted(tmp_path / "conv", count=1, channels=3)).read("case000")
    # make_image puts 255 - grey (bright) in the last RGB channel.
    assert image[..., 2].mean() > image[..., 0].mean()


def test_copies_zero_writes_an_empty_manifest_and_no_shards(tmp_path) -> None:
    sources = ConvertedDataset(make_converted(tmp_path / "conv", count=2))
    out = tmp_path / "out"
    out.mkdir()
    stats = augment_dataset(sources, config(copies=0), out)
    assert (out / shards.MANIFEST).read_text().strip() == ",".join(shards.COLUMNS)
    assert not (out / shards.SHARDS).exists()
    assert stats["samples"] == 0 and stats["shards"] == 0
    assert cv2.imread(str(out / shards.PREVIEW)) is not None


def test_write_npz_is_reproducible_and_loadable(tmp_path) -> None:
    arrays = {"images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4, 1), "labels": np.ones((2, 3, 4), np.uint8)}
    shards.write_npz(tmp_path / "a.npz", arrays)
    shards.write_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as loaded:
        assert all(np.array_equal(loaded[k], v) for k, v in arrays.items())


# --------------------------------------------------------------------------- bad input
def test_missing_manifest_is_a_data_error(tmp_path) -> None:
    conv = make_converted(tmp_path / "conv", count=1)
    (conv / converted.MANIFEST).unlink()
    with pytest.raises(DataError, match="manifest.csv: not found"):
        ConvertedDataset(conv)


@pytest.mark.parametrize("workers", [1, 2])
def test_unreadable_png_is_a_data_error(tmp_path, workers) -> None:
    conv = make_converted(tmp_path / "conv", count=3)
    (conv / converted.IMAGES / "case001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="case001.png: cannot decode PNG"):
        augment_dataset(ConvertedDataset(conv), config(workers=workers, copies=1), tmp_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_label_outside_the_classes_is_a_data_error(tmp_path, workers) -> None:
    conv = make_converted(tmp_path / "conv", count=2)
    label = np.zeros((48, 64), np.uint8)
    label[5, 5] = 7
    cv2.imwrite(str(conv / converted.LABELS / "case000.png"), label)
    with pytest.raises(DataError, match=r"label values \[7\] outside the 3 classes"):
        augment_dataset(ConvertedDataset(conv), config(workers=workers, copies=1), tmp_path)


# --------------------------------------------------------------------------- the stage
def stage_params(tmp_path: Path, **augment) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["augment"].update(augment)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_end_to_end(tmp_path) -> None:
    make_converted(tmp_path / paths.converted_dir("synthetic"), count=4)
    stage_params(tmp_path, copies=3, size=[48, 48], shard_size=5, workers=2)
    for stage in ("plan", "augment"):  # augment reads its section of the plan
        result = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), "synthetic"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    out = tmp_path / paths.augmented_dir("synthetic")
    manifest, files = read_outputs(out)
    assert len(manifest) == 12 and list(files) == ["part-00000.npz", "part-00001.npz", "part-00002.npz"]
    stats = json.loads((out / shards.STATS).read_text())
    assert stats["size"] == [48, 48] and stats["classes"] == list(CLASSES) and stats["channels"] == 1
    preview = cv2.imread(str(out / shards.PREVIEW))
    assert preview.shape[1] == 4 * 48 and preview.shape[0] > 2 * 48  # original + 3 copies; 2 image classes
    assert [p.name for p in out.parent.iterdir()] == ["synthetic"]  # no temporary folder left behind


@pytest.mark.parametrize(("stage", "missing"), [("plan", "report.json: not found (run the convert stage first)"),
                                                ("augment", "synthetic.json: not found")])
def test_stage_reports_bad_data_in_one_line(tmp_path, stage, missing) -> None:
    stage_params(tmp_path)
    result = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), "synthetic"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert missing in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / paths.augmented_dir("synthetic")).exists()
    assert not (tmp_path / paths.plan_file("synthetic")).exists()
