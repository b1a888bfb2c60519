"""``volume.slab_groups``: contiguous slabs of one volume as groups, labelled as not a patient-level result."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from ct_phantom import make_phantom, write_nifti
from medseg.config import ConvertConfig, SplitConfig
from medseg.data.converted import ConvertedDataset
from medseg.data.split import split_table
from medseg.volumes.convert import convert_volumes

CLASSES = ["background", "liver", "tumour"]
DECATHLON = {"format": "nifti_volumes", "values": {"liver": 1, "tumour": 2}}


def one_patient(raw: Path, depth: int = 22) -> Path:
    p = make_phantom((24, 20, depth), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    write_nifti(raw / "imagesTr" / "liver_3.nii.gz", p.hu, p.affine, "LPS")
    write_nifti(raw / "labelsTr" / "liver_3.nii.gz", p.label, p.affine, "LPS")
    return raw


def config(**volume) -> ConvertConfig:
    return ConvertConfig(annotation=DECATHLON, classes=CLASSES, volume={"empty_fraction": 1.0, **volume})


def test_volume_slab_groups_are_contiguous_runs_of_n_slices(tmp_path: Path) -> None:
    report = convert_volumes(one_patient(tmp_path / "raw"), tmp_path / "out", config(slab_groups=5))
    manifest = ConvertedDataset(tmp_path / "out").manifest
    assert len(manifest) == 22
    for _, row in manifest.iterrows():
        assert row["group"] == f"liver_3_slab{int(row['slice']) // 5:03d}"
        assert row["volume"] == "liver_3"  # the volume stays known, for the per-volume scores
    slices = manifest.groupby("group")["slice"].apply(sorted).tolist()
    assert slices == [list(range(0, 5)), list(range(5, 10)), list(range(10, 15)), list(range(15, 20)), [20, 21]]
    assert report["groups"] == 5
    assert report["groups_by"]["patient_level"] is False
    assert "NOT a patient-level result" in report["groups_by"]["caveat"]
    assert report["volume"]["slab_groups"] == 5


def test_volume_slab_groups_off_keeps_one_group_per_volume(tmp_path: Path) -> None:
    report = convert_volumes(one_patient(tmp_path / "raw"), tmp_path / "out", config())
    manifest = ConvertedDataset(tmp_path / "out").manifest
    assert set(manifest["group"]) == {"liver_3"}
    assert report["groups_by"] == {"unit": "volume", "patient_level": True}


def test_volume_slabs_give_a_one_patient_split_three_sides(tmp_path: Path) -> None:
    convert_volumes(one_patient(tmp_path / "raw", depth=40), tmp_path / "out", config(slab_groups=4))
    manifest = ConvertedDataset(tmp_path / "out").manifest
    table = split_table(manifest, pd.DataFrame(columns=["id", "source_id"]), SplitConfig(valid=0.2, test=0.2))
    assert set(table["split"]) == {"train", "valid", "test"}
    assert (table.groupby("group")["split"].nunique() == 1).all()  # a slab is never cut


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_volume_slab_groups_must_be_a_positive_count(bad: float) -> None:
    with pytest.raises(ValidationError, match="slab_groups"):
        config(slab_groups=bad)
