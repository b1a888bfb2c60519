"""The readers: NIfTI in any axis orientation and DICOM series in any file order give the phantom's RAS volume."""
from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from ct_phantom import SeriesOptions, make_phantom, write_nifti, write_series
from medseg.io.errors import DataError
from medseg.volumes.dicom import read_series
from medseg.volumes.nifti import read_nifti


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


@pytest.mark.parametrize("axes", ["RAS", "LPS", "ASR", "PIL"])
def test_nifti_round_trip_keeps_the_affine(tmp_path: Path, phantom, axes: str) -> None:
    path = write_nifti(tmp_path / "ct.nii.gz", phantom.hu, phantom.affine, axes)
    volume = read_nifti(path)
    np.testing.assert_array_equal(volume.data, phantom.hu)
    np.testing.assert_allclose(volume.affine, phantom.affine, atol=1e-6)
    assert volume.spacing == pytest.approx(phantom.spacing)
    # The file's own grid is kept, to write results back on it.
    stored = nib.load(path)
    np.testing.assert_allclose(volume.source_affine, stored.affine)
    assert volume.source_shape == stored.shape


def test_nifti_header_scaling_gives_hu(tmp_path: Path, phantom) -> None:
    image = nib.Nifti1Image((phantom.hu + 1024).astype(np.uint16), phantom.affine)
    image.header.set_slope_inter(1.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii")
    np.testing.assert_array_equal(read_nifti(tmp_path / "scaled.nii").data, phantom.hu)


def test_dicom_series_gives_the_phantom_volume(tmp_path: Path, phantom) -> None:
    volume = read_series(write_series(tmp_path / "ct", phantom.hu, phantom.affine), modality="CT")
    np.testing.assert_array_equal(volume.data, phantom.hu)  # RescaleIntercept -1024 applied
    np.testing.assert_allclose(volume.affine, phantom.affine, atol=1e-6)


def test_dicom_and_nifti_of_one_scan_agree(tmp_path: Path, phantom) -> None:
    dicom = read_series(write_series(tmp_path / "ct", phantom.hu, phantom.affine))
    nifti = read_nifti(write_nifti(tmp_path / "ct.nii", phantom.hu, phantom.affine, "LPS"))
    np.testing.assert_array_equal(dicom.data, nifti.data)
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-6)


def test_dicom_order_comes_from_instance_numbers_not_file_names(tmp_path: Path, phantom) -> None:
    names = [f"slice_{random.Random(7).randrange(10**6) + k * 7919:07d}" for k in range(phantom.hu.shape[2])]
    random.Random(3).shuffle(names)  # name order no longer follows the slices
    assert sorted(names) != names
    volume = read_series(write_series(tmp_path / "ct", phantom.hu, phantom.affine, SeriesOptions(names=names)))
    np.testing.assert_array_equal(volume.data, phantom.hu)


def test_dicom_order_falls_back_to_the_number_ending_the_file_name(tmp_path: Path, phantom) -> None:
    # image_0 .. image_13 sort as image_0, image_1, image_10, ...: only the number gives the order.
    options = SeriesOptions(instance_numbers=False, first_number=0)
    volume = read_series(write_series(tmp_path / "ct", phantom.hu, phantom.affine, options))
    np.testing.assert_array_equal(volume.data, phantom.hu)


def test_dicom_rescale_slope_and_intercept(tmp_path: Path, phantom) -> None:
    hu = (phantom.hu // 2) * 2  # representable with slope 2
    volume = read_series(write_series(tmp_path / "ct", hu, phantom.affine, SeriesOptions(slope=2.0, intercept=-2048)))
    np.testing.assert_array_equal(volume.data, hu)


def test_dicom_positions_all_zero_take_the_spacing_between_slices(tmp_path: Path, phantom) -> None:
    volume = read_series(write_series(tmp_path / "ct", phantom.hu, phantom.affine, SeriesOptions(positions="zero")))
    np.testing.assert_array_equal(volume.data, phantom.hu)
    assert volume.spacing == pytest.approx(phantom.spacing)


# --------------------------------------------------------------------------- refused, naming the file
def test_dicom_gap_in_instance_numbers_is_refused(tmp_path: Path, phantom) -> None:
    folder = write_series(tmp_path / "ct", phantom.hu, phantom.affine, SeriesOptions(drop=[5]))
    with pytest.raises(DataError, match=r"1 slice\(s\) missing: number\(s\) 6 between image_5 and image_7") as err:
        read_series(folder)
    assert err.value.path == folder


def test_dicom_slices_of_different_sizes_are_refused(tmp_path: Path, phantom) -> None:
    folder = write_series(tmp_path / "ct", phantom.hu, phantom.affine, SeriesOptions(resize={3: (30, 40)}))
    with pytest.raises(DataError, match="slice is 40x30 pixels but image_1 is 40x32") as err:
        read_series(folder)
    assert err.value.path == folder / "image_4"


def test_dicom_of_another_modality_is_refused_where_hu_are_expected(tmp_path: Path, phantom) -> None:
    folder = write_series(tmp_path / "mr", phantom.hu, phantom.affine, SeriesOptions(modality="MR"))
    with pytest.raises(DataError, match="modality is 'MR' but the profile expects CT"):
        read_series(folder, modality="CT")
    assert read_series(folder).shape == phantom.hu.shape  # a mask series is read whatever its modality


def test_a_file_that_is_not_dicom_is_refused(tmp_path: Path, phantom) -> None:
    folder = write_series(tmp_path / "ct", phantom.hu, phantom.affine)
    (folder / "notes.txt").write_text("not a slice")
    with pytest.raises(DataError, match="not a readable DICOM file") as err:
        read_series(folder)
    assert err.value.path == folder / "notes.txt"


def test_unevenly_spaced_slices_are_refused(tmp_path: Path, phantom) -> None:
    folder = write_series(tmp_path / "ct", phantom.hu, phantom.affine)
    moved = pydicom.dcmread(folder / "image_6")
    moved.ImagePositionPatient[2] = float(moved.ImagePositionPatient[2]) + 1.0
    moved.save_as(folder / "image_6")
    with pytest.raises(DataError, match="not evenly spaced") as err:
        read_series(folder)
    assert err.value.path.name in {"image_6", "image_7"}


def test_a_nifti_file_that_is_not_nifti_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="not a readable NIfTI volume") as err:
        read_nifti(tmp_path / "broken.nii.gz")
    assert err.value.path.name == "broken.nii.gz"
