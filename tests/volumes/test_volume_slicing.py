"""HU window, slice selection and its seeding, in-plane resampling, 2.5D neighbours."""
from __future__ import annotations

import numpy as np
import pytest

from medseg.volumes.slicing import InPlaneGrid, select_slices, slice_rng, stack_indices, window


def test_window_maps_its_ends_to_0_and_255_and_clips_outside() -> None:
    hu = np.array([-1000, -200, -100, 0, 100, 200, 1500], np.float32)
    # (HU + 200) * 255 / 400, rounded: -100 -> 63.75, 0 -> 127.5, 100 -> 191.25
    assert window(hu, -200, 200).tolist() == [0, 0, 64, 128, 191, 255, 255]
    assert window(hu, -1000, 1000).tolist() == [0, 102, 115, 128, 140, 153, 255]
    assert window(hu, -200, 200).dtype == np.uint8


def _label(depth: int, foreground: list[int]) -> np.ndarray:
    label = np.zeros((4, 5, depth), np.uint8)
    for k in foreground:
        label[1, 2, k] = 1
    return label


@pytest.mark.parametrize(("fraction", "empty"), [(0.0, 0), (0.25, 5), (0.5, 10), (1.0, 20)])
def test_every_foreground_slice_and_a_share_of_the_empty_ones(fraction: float, empty: int) -> None:
    foreground = [3, 4, 5, 11, 17]
    kept, empty_kept = select_slices(_label(25, foreground), fraction, slice_rng(2026, "liver_0"))
    assert set(foreground) <= set(kept)
    assert len(kept) == len(foreground) + empty
    assert empty_kept == empty
    assert kept == sorted(kept) and len(set(kept)) == len(kept)


def test_the_empty_slices_drawn_follow_the_seed_and_the_volume() -> None:
    label = _label(60, [30])

    def drawn(seed: int, volume: str) -> list[int]:
        return select_slices(label, 0.3, slice_rng(seed, volume))[0]

    assert drawn(2026, "liver_0") == drawn(2026, "liver_0")
    assert drawn(2026, "liver_0") != drawn(2027, "liver_0")
    assert drawn(2026, "liver_0") != drawn(2026, "liver_1")
    assert drawn(-5, "liver_0") != drawn(5, "liver_0")


def test_resampling_keeps_the_field_of_view_and_the_voxel_positions() -> None:
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    grid = InPlaneGrid.for_spacing((40, 30), (0.8, 0.9), (1.6, 1.8))
    assert grid.size == (20, 15)
    out = grid.affine(affine)
    assert np.diag(out)[:3].tolist() == pytest.approx([1.6, 1.8, 2.5])
    # New voxel 0 sits midway between old voxels 0 and 1; both grids end half a voxel beyond their last centre.
    assert out[:3, 3].tolist() == pytest.approx([-10.0 + 0.4, 20.0 + 0.45, 5.0])
    first_edge = affine[:2, :2] @ [-0.5, -0.5] + affine[:2, 3]
    assert (out[:2, :2] @ [-0.5, -0.5] + out[:2, 3]).tolist() == pytest.approx(first_edge.tolist())
    # A plane whose value is its x position in mm keeps that meaning on the new grid.
    x_mm = (affine[0, 0] * np.arange(40) + affine[0, 3])[:, None].repeat(30, axis=1).astype(np.float32)
    resampled = grid.image(x_mm)
    assert resampled.shape == (20, 15)
    np.testing.assert_allclose(resampled[:, 0], out[0, 0] * np.arange(20) + out[0, 3], atol=1e-4)


def test_labels_are_resampled_by_nearest_neighbour() -> None:
    plane = np.zeros((40, 30), np.uint8)
    plane[10:30, 6:24] = 2
    resampled = InPlaneGrid.for_spacing((40, 30), (0.8, 0.9), (1.6, 1.8)).label(plane)
    assert set(np.unique(resampled).tolist()) == {0, 2}
    assert int((resampled == 2).sum()) * 4 == pytest.approx(int((plane == 2).sum()), rel=0.15)


def test_no_target_spacing_keeps_the_grid() -> None:
    grid = InPlaneGrid.for_spacing((40, 30), (0.8, 0.9), None)
    plane = np.arange(1200, dtype=np.float32).reshape(40, 30)
    assert not grid.resampled and grid.image(plane) is plane
    np.testing.assert_array_equal(grid.affine(np.diag([0.8, 0.9, 2.5, 1.0])), np.diag([0.8, 0.9, 2.5, 1.0]))


def test_25d_neighbours_are_repeated_at_the_ends_of_the_volume() -> None:
    assert stack_indices(5, 10, 1) == [5]
    assert stack_indices(5, 10, 3) == [4, 5, 6]
    assert stack_indices(0, 10, 3) == [0, 0, 1]
    assert stack_indices(9, 10, 3) == [8, 9, 9]
