"""The synthetic dataset: AUL layout, valid polygons, determinism, and images
whose annotated regions really look different from their surroundings."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from medseg.config import SyntheticSource
from medseg.sources.synthetic import generate, rasterise, render_preview, synthesise

HEIGHT, WIDTH = 128, 160
COUNTS = {"Benign": 3, "Malignant": 3, "Normal": 2}


def make_cfg(counts: dict[str, int] = COUNTS, seed: int = 3) -> SyntheticSource:
    return SyntheticSource(kind="synthetic", counts=counts, height=HEIGHT, width=WIDTH, seed=seed)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load_polygon(path: Path) -> np.ndarray:
    return np.array(json.loads(path.read_text()), np.int32)


def region(root: Path, folder: str, part: str, number: int, shape: tuple[int, int]) -> np.ndarray:
    return rasterise(load_polygon(root / folder / "segmentation" / part / f"{number}.json"), shape)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    assert generate(root, make_cfg()) == COUNTS
    return root


def test_layout_matches_aul(dataset: Path) -> None:
    files = set(tree_bytes(dataset))
    expected = set()
    numbers = {"Benign": [1, 2, 3], "Malignant": [4, 5, 6], "Normal": [7, 8]}
    for folder, ns in numbers.items():
        parts = ["outline", "liver"] + (["mass"] if folder != "Normal" else [])
        for n in ns:
            expected.add(f"{folder}/image/{n}.jpg")
            expected.update(f"{folder}/segmentation/{part}/{n}.json" for part in parts)
    assert files == expected


def test_images_are_grey_three_channel_jpegs(dataset: Path) -> None:
    for path in dataset.glob("*/image/*.jpg"):
        assert path.read_bytes()[:2] == b"\xff\xd8"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        spread = image.max(axis=2).astype(int) - image.min(axis=2)
        assert spread.max() <= 3, f"{path}: channels differ, not grey"


def test_polygons_are_flat_point_lists_inside_the_image(dataset: Path) -> None:
    paths = list(dataset.glob("*/segmentation/*/*.json"))
    assert paths
    for path in paths:
        points = json.loads(path.read_text())
        assert isinstance(points, list) and 3 <= len(points) <= 120, path
        for point in points:
            assert isinstance(point, list) and len(point) == 2, path
            x, y = point
            assert isinstance(x, (int, float)) and isinstance(y, (int, float))
            assert 0 <= x < WIDTH and 0 <= y < HEIGHT, f"{path}: {point} outside the image"


@pytest.mark.parametrize("number,folder", [(1, "Benign"), (4, "Malignant"), (7, "Normal")])
def test_regions_nest_and_field_of_view_is_black_outside(dataset: Path, number: int, folder: str) -> None:
    shape = (HEIGHT, WIDTH)
    fan = region(dataset, folder, "outline", number, shape)
    liver = region(dataset, folder, "liver", number, shape)
    assert 0.25 < liver.sum() / fan.sum() < 0.9
    assert not (liver & ~fan).any(), "liver leaves the field of view"
    if folder != "Normal":
        mass = region(dataset, folder, "mass", number, shape)
        assert not (mass & ~liver).any(), "mass leaves the liver"
        assert 0.02 <= mass.sum() / liver.sum() <= 0.2
    image = cv2.imread(str(dataset / folder / "image" / f"{number}.jpg"), cv2.IMREAD_GRAYSCALE)
    far_outside = ~cv2.dilate(fan.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.median(image[far_outside]) == 0
    assert image[fan].mean() > 40


def test_same_seed_gives_identical_bytes(dataset: Path, tmp_path: Path) -> None:
    generate(tmp_path, make_cfg())
    assert tree_bytes(tmp_path) == tree_bytes(dataset)


def test_different_seed_gives_different_images(dataset: Path, tmp_path: Path) -> None:
    generate(tmp_path, make_cfg(seed=4))
    other, base = tree_bytes(tmp_path), tree_bytes(dataset)
    assert other.keys() == base.keys()
    assert all(other[name] != base[name] for name in base if name.endswith(".jpg"))


def test_image_depends_on_its_number_not_on_the_other_counts(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir(), large.mkdir()
    generate(small, make_cfg({"Benign": 1, "Malignant": 1, "Normal": 0}))
    generate(large, make_cfg({"Benign": 1, "Malignant": 1, "Normal": 2}))
    small_files, large_files = tree_bytes(small), tree_bytes(large)
    assert all(large_files[name] == data for name, data in small_files.items())


def test_counts_follow_config_and_numbers_stay_consecutive(tmp_path: Path) -> None:
    counts = generate(tmp_path, make_cfg({"Benign": 2, "Malignant": 0, "Normal": 1}))
    assert counts == {"Benign": 2, "Malignant": 0, "Normal": 1}
    images = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/image/*.jpg"))
    assert images == ["Benign/image/1.jpg", "Benign/image/2.jpg", "Normal/image/3.jpg"]
    # An empty class keeps its (empty) folders, so the layout is always AUL's.
    assert (tmp_path / "Malignant" / "image").is_dir()
    assert not [p for p in (tmp_path / "Malignant").rglob("*") if p.is_file()]


def mass_statistics(root: Path, folder: str, numbers: list[int]) -> list[tuple[float, float, float]]:
    """(mean inside the mass, mean of the rest of the liver, std inside the mass) per image."""
    shape, stats = (HEIGHT, WIDTH), []
    for n in numbers:
        image = cv2.imread(str(root / folder / "image" / f"{n}.jpg"), cv2.IMREAD_GRAYSCALE).astype(float)
        mass, liver = region(root, folder, "mass", n, shape), region(root, folder, "liver", n, shape)
        stats.append((image[mass].mean(), image[liver & ~mass].mean(), image[mass].std()))
    return stats


def test_benign_masses_are_darker_than_the_liver(dataset: Path) -> None:
    for mass_mean, liver_mean, _ in mass_statistics(dataset, "Benign", [1, 2, 3]):
        assert mass_mean < liver_mean - 10


def test_malignant_masses_are_more_heterogeneous_than_benign(dataset: Path) -> None:
    benign = [std for *_, std in mass_statistics(dataset, "Benign", [1, 2, 3])]
    malignant = [std for *_, std in mass_statistics(dataset, "Malignant", [4, 5, 6])]
    assert np.mean(malignant) > 1.2 * np.mean(benign)


@pytest.mark.parametrize("height,width", [(64, 64), (64, 512), (512, 64), (97, 333)])
def test_odd_image_sizes_keep_regions_nested(height: int, width: int) -> None:
    for number, folder in [(1, "Benign"), (2, "Malignant"), (3, "Normal")]:
        image, scene = synthesise(0, number, folder, height, width)
        assert image.shape == (height, width) and image.dtype == np.uint8
        assert scene.liver_mask.any() and not (scene.liver_mask & ~scene.fan_mask).any()
        assert not (scene.mass_mask & ~scene.liver_mask).any()
        assert scene.mass_mask.any() == (folder != "Normal")


def test_preview_grid(dataset: Path, tmp_path: Path) -> None:
    path = tmp_path / "preview.png"
    render_preview(dataset, path, n=6)
    grid = cv2.imread(str(path))
    assert grid.shape == (2 * HEIGHT, 3 * WIDTH, 3)
