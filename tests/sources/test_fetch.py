"""The fetch stage's sources: Zenodo-shaped and plain URLs served on 127.0.0.1, local folders and archives."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import py7zr
import pytest
import yaml
from PIL import Image

from conftest import REPO, FileServer, ramp, save
from medseg.config import LocalSource, SyntheticSource, UrlSource, ZenodoSource, load_params
from medseg.formats.convert import convert_dataset
from medseg.io.errors import DataError
from medseg.sources.fetch import fetch_source


def aul_zip(folder: str, numbers: list[int]) -> bytes:
    """A small archive shaped like AUL's <Class>.zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n in numbers:
            img = io.BytesIO()
            Image.fromarray(ramp(24, 32, 3)).save(img, format="JPEG")
            zf.writestr(f"{folder}/image/{n}.jpg", img.getvalue())
            square = [[2, 2], [29, 2], [29, 21], [2, 21]]
            zf.writestr(f"{folder}/segmentation/liver/{n}.json", json.dumps(square))
            zf.writestr(f"{folder}/segmentation/outline/{n}.json", json.dumps(square))
            if folder != "Normal":
                zf.writestr(f"{folder}/segmentation/mass/{n}.json", json.dumps([[8, 8], [14, 8], [14, 14]]))
    return buf.getvalue()


def test_zenodo_source_downloads_verifies_and_converts(tmp_path, server: FileServer):
    files = []
    for i, folder in enumerate(["Benign", "Malignant", "Normal"]):
        remote = server.publish(f"records/42/files/{folder}.zip", aul_zip(folder, [3 * i + 1, 3 * i + 2]))
        files.append({"name": f"{folder}.zip", "md5": remote.md5})
    source = ZenodoSource(kind="zenodo", record="42", files=files, base_url=server.base_url, retries=0)
    dest, cache = tmp_path / "raw", tmp_path / "cache"
    dest.mkdir()
    record = fetch_source(source, dest, cache)
    assert [i["name"] for i in record["inputs"]] == ["Benign.zip", "Malignant.zip", "Normal.zip"]
    assert record["inputs"][0]["md5"] == files[0]["md5"] and record["extensions"][".jpg"] == 6
    # The real AUL profile's convert settings read what was downloaded.
    cfg = load_params(REPO / "params.yaml").dataset("aul").convert
    report = convert_dataset(dest, tmp_path / "converted", cfg, workers=1)
    assert report["image_classes"] == {"benign": 2, "malignant": 2, "normal": 2}
    # A second fetch reuses the verified downloads: no new requests.
    hits = sum(server.hits.values())
    dest2 = tmp_path / "raw2"
    dest2.mkdir()
    assert fetch_source(source, dest2, cache)["tree_sha256"] == record["tree_sha256"]
    assert sum(server.hits.values()) == hits


def test_url_source_with_wrong_checksum_fails(tmp_path, server: FileServer):
    server.publish("data.zip", aul_zip("Benign", [1]))
    source = UrlSource(kind="url", files=[{"name": "data.zip", "url": f"{server.base_url}/data.zip",
                                           "sha256": "0" * 64}], retries=0)
    dest = tmp_path / "raw"
    dest.mkdir()
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch_source(source, dest, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_local_folder_and_archive(tmp_path):
    src = tmp_path / "src"
    save(src / "images" / "a b.png", ramp())
    save(src / "masks" / "a b.png", ramp(channels=1))
    dest = tmp_path / "raw"
    dest.mkdir()
    record = fetch_source(LocalSource(kind="local", path=str(src)), dest, tmp_path / "cache")
    assert record["files"] == 2 and (dest / "images" / "a b.png").is_file()
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(src / "images" / "a b.png", "images/a b.png")
    dest2 = tmp_path / "raw2"
    dest2.mkdir()
    record = fetch_source(LocalSource(kind="local", path=str(archive)), dest2, tmp_path / "cache")
    assert (dest2 / "src" / "images" / "a b.png").is_file() and record["inputs"][0]["md5"]


def test_local_folder_unpacks_a_split_7z_as_one_archive(tmp_path):
    """train.7z.001 + train.7z.002 become one train/ folder; other files, zips inside included, are copied."""
    packed = tmp_path / "train.7z"
    with py7zr.SevenZipFile(packed, "w") as sz:
        sz.write(save(tmp_path / "img" / "a.png", ramp()), "train/images/a.png")
        sz.write(save(tmp_path / "img" / "m.png", ramp(channels=1)), "train/masks/a.png")
    data = packed.read_bytes()
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.7z.001").write_bytes(data[: len(data) // 2])
    (src / "train.7z.002").write_bytes(data[len(data) // 2 :])
    (src / "SOURCE.txt").write_text("where the archives came from")
    with zipfile.ZipFile(src / "scores.npz", "w") as zf:  # a zip by content, data by name
        zf.writestr("dice.npy", b"\x93NUMPY")
    dest = tmp_path / "raw"
    dest.mkdir()

    record = fetch_source(LocalSource(kind="local", path=str(src)), dest, tmp_path / "cache")

    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["SOURCE.txt", "scores.npz", "train/train/images/a.png", "train/train/masks/a.png"]
    assert (dest / "train/train/images/a.png").read_bytes() == (tmp_path / "img" / "a.png").read_bytes()
    assert record["inputs"][0]["files"] == 3 and record["files"] == 4


def test_url_source_unpacks_a_split_7z_once_all_volumes_are_downloaded(tmp_path, server: FileServer):
    packed = tmp_path / "train.7z"
    with py7zr.SevenZipFile(packed, "w") as sz:
        sz.writestr(os.urandom(5000), "train/images/a.png")
    data = packed.read_bytes()
    files = []
    for name, part in [("train.7z.001", data[:1000]), ("train.7z.002", data[1000:])]:
        remote = server.publish(name, part)
        files.append({"name": name, "url": remote.url, "sha256": remote.sha256})
    dest = tmp_path / "raw"
    dest.mkdir()

    record = fetch_source(UrlSource(kind="url", files=files, retries=0), dest, tmp_path / "cache")

    assert [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()] == ["train/train/images/a.png"]
    assert [i["name"] for i in record["inputs"]] == ["train.7z.001", "train.7z.002"]


def test_local_folder_refuses_a_split_7z_without_its_first_volume(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.7z.002").write_bytes(os.urandom(100))
    dest = tmp_path / "raw"
    dest.mkdir()
    with pytest.raises(DataError, match=r"train\.7z\.002: .*first volume train\.7z\.001 is absent"):
        fetch_source(LocalSource(kind="local", path=str(src)), dest, tmp_path / "cache")


def test_archive_never_unpacks_over_copied_files(tmp_path):
    """``train/`` is copied first (sorted before ``train.zip``); unpacking train.zip there would replace it."""
    src = tmp_path / "src"
    save(src / "train" / "a.png", ramp())
    with zipfile.ZipFile(src / "train.zip", "w") as zf:
        zf.writestr("b.png", b"png")
    dest = tmp_path / "raw"
    dest.mkdir()
    with pytest.raises(DataError, match=r"train\.zip: would unpack into .*train, which is already filled"):
        fetch_source(LocalSource(kind="local", path=str(src)), dest, tmp_path / "cache")
    assert (dest / "train" / "a.png").is_file()


def test_local_source_refuses_links_and_missing_paths(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("/etc/passwd", src / "passwd")
    dest = tmp_path / "raw"
    dest.mkdir()
    with pytest.raises(DataError, match="symbolic link"):
        fetch_source(LocalSource(kind="local", path=str(src)), dest, tmp_path / "cache")
    with pytest.raises(DataError, match="local source not found"):
        fetch_source(LocalSource(kind="local", path=str(tmp_path / "nope")), dest, tmp_path / "cache")


def test_synthetic_provenance_is_reproducible(tmp_path):
    source = SyntheticSource(kind="synthetic", counts={"Benign": 1, "Malignant": 1, "Normal": 1}, height=64,
                             width=96, seed=3)
    records = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        records.append(fetch_source(source, tmp_path / name, tmp_path / "cache"))
    assert records[0] == records[1] and records[0]["license"].startswith("CC0")


def test_fetch_stage_failure_leaves_nothing_behind(tmp_path):
    """A failing fetch exits 1 with the file named, and leaves no raw folder or provenance."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["us-liver-mini"]["source"]["path"] = str(tmp_path / "missing")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(REPO / "stages/fetch.py"), "us-liver-mini"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "missing: local source not found" in proc.stderr
    assert not (tmp_path / "data" / "raw" / "us-liver-mini").exists()
    assert not (tmp_path / "data" / "raw" / "us-liver-mini.provenance.json").exists()
    leftovers = list((tmp_path / "data" / "raw").iterdir()) if (tmp_path / "data" / "raw").exists() else []
    assert leftovers == []
