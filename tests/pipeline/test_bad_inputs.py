"""Bad inputs through the stage scripts, as a user runs them (issue 6).

Each case lays out a work folder like the repository (``params.yaml`` at the
root, ``data/`` below it), runs the real stage command there and checks what
a user relies on: exit status 1 with a message, not a traceback, that names
the file (or the params key) and the problem; and nothing a later stage or
DVC could take for a result: the stage's output is absent and no
``.<name>.tmp-*`` sibling is left behind.

Convert cases first fetch a local folder (which must succeed: raw data is
copied as published) and then convert it. The library-level checks behind
each case live in test_imageio, test_masks, test_conversion, test_download,
test_archive, test_config and test_training.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO, FileServer, ramp, save

DS = "bad"
RAW, CONVERTED = Path("data/raw") / DS, Path("data/converted") / DS
PROVENANCE = Path("data/raw") / f"{DS}.provenance.json"
DOWNLOADS = Path("data/downloads") / DS
ODD = os.fsdecode(b"scan (2) \xff")  # spaces, parentheses and a byte that is not UTF-8
ODD_SHOWN = "scan (2) \\xff"  # how the message prints it


# --------------------------------------------------------------------------- running a stage
def stage(work: Path, name: str, dataset: str = DS) -> subprocess.CompletedProcess:
    """``python stages/<name>.py <dataset>`` with ``work`` as the repository root."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py"), dataset], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_refused(proc: subprocess.CompletedProcess, expected: tuple[str, ...]) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for words in expected:
        assert words in proc.stderr, f"{words!r} not in:\n{proc.stderr}"


def assert_absent(work: Path, *outputs: Path) -> None:
    """No output, and no temporary sibling a crash could have left, for each of ``outputs``."""
    for out in outputs:
        assert not (work / out).exists(), f"{out} was left behind"
        parent = work / out.parent
        leftovers = [p.name for p in parent.glob(f".{out.name}.*")] if parent.is_dir() else []
        assert leftovers == [], f"temporary files left in {out.parent}: {leftovers}"


def write_params(work: Path, params: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def profile(source: dict, **convert) -> dict:
    """A one-dataset params file: ``source`` for fetch, a folder layout of colour masks for convert."""
    cfg = {
        "annotation": {"format": "rgb", "colors": {"background": [0, 0, 0], "lesion": [255, 255, 255]}},
        "classes": ["background", "lesion"],
        "channels": 1,
        "layout": {"images": "images", "masks": "masks", "mask_name": "{stem}_mask"},
        "image_class": {"source": "fixed", "value": "lesion"},
    }
    return {"active": [DS], "datasets": {DS: {"source": source, "convert": {**cfg, **convert}}}}


# --------------------------------------------------------------------------- raw files
def pair(src: Path, stem: str, ext: str = "png", mask: np.ndarray | None = None) -> None:
    """An image and its white-square mask under ``images/`` and ``masks/``."""
    save(src / "images" / f"{stem}.{ext}", ramp(24, 32, 1))
    if mask is None:
        mask = np.zeros((24, 32), np.uint8)
        mask[5:10, 5:12] = 255
    save(src / "masks" / f"{stem}_mask.png", mask)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def noisy(path: Path, **kwargs) -> Path:
    """An image whose pixel data fill most of the file, so cutting the file cuts the pixels."""
    return save(path, np.random.default_rng(0).integers(0, 256, (48, 64), np.uint8), **kwargs)


def palette_mask(path: Path) -> None:
    idx = np.zeros((24, 32), np.uint8)
    idx[5:10, 5:12] = 1
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * (254 * 3))
    im.save(path)


def zip_archive(path: Path, members: list[zipfile.ZipInfo | tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images/a.png", b"fine")
        for m in members:
            zf.writestr(*m) if isinstance(m, tuple) else zf.writestr(m, b"payload")
    return path


def zip_link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def tar_archive(path: Path, member: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        good = tarfile.TarInfo("images/a.png")
        good.size = 4
        tf.addfile(good, io.BytesIO(b"fine"))
        bad = tarfile.TarInfo(member)
        bad.type, bad.linkname = kind, linkname
        bad.size = 7 if kind == tarfile.REGTYPE else 0
        tf.addfile(bad, io.BytesIO(b"payload") if kind == tarfile.REGTYPE else None)
    return path


# --------------------------------------------------------------------------- convert: bad raw data
# Each builder fills a raw folder (fetched as a local source) and returns convert settings to change.
# A good pair "a" sits beside the bad file, so the refusal is about that file, not an empty dataset.
def truncated_png(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b")
    truncate(noisy(src / "images" / "b.png"))
    return {}


def truncated_jpeg(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b", ext="jpg")
    truncate(noisy(src / "images" / "b.jpg", quality=95))
    return {}


def sixteen_bit_mask(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b", mask=np.full((24, 32), 1000, np.uint16))
    return {}


def palette_mask_under_binary(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b")
    palette_mask(src / "masks" / "b_mask.png")
    return {"annotation": {"format": "binary", "foreground": "lesion"}}


def mask_size_differs(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b", mask=np.zeros((20, 32), np.uint8))
    return {}


def mask_colour_not_in_map(src: Path) -> dict:
    pair(src, "a")
    mask = np.zeros((24, 32, 3), np.uint8)
    mask[2:4, 2:5] = (255, 0, 0)
    pair(src, "b", mask=mask)
    return {}


def empty_dataset(src: Path) -> dict:
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    return {}


def image_without_mask(src: Path) -> dict:
    pair(src, "a")
    save(src / "images" / "b.png", ramp(24, 32, 1))
    return {}


def one_stem_two_extensions(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b")
    save(src / "images" / "b.jpg", ramp(24, 32, 1))
    return {}


def odd_name_of_a_broken_file(src: Path) -> dict:
    pair(src, "a")
    pair(src, ODD)
    truncate(noisy(src / "images" / f"{ODD}.png"))
    return {}


def odd_names_that_clash(src: Path) -> dict:
    pair(src, "a (1)")
    pair(src, "a_1")
    return {}


def over_pixel_limit(src: Path) -> dict:
    pair(src, "a")  # 32x24 = 768 pixels
    save(src / "images" / "b.png", ramp(40, 40, 1))
    save(src / "masks" / "b_mask.png", np.zeros((40, 40), np.uint8))
    return {"max_pixels": 1000}


def missing_class_folder(src: Path) -> dict:
    for folder in ("benign",):
        save(src / folder / f"{folder} (1).png", ramp(24, 32, 1))
        save(src / folder / f"{folder} (1)_mask.png", np.zeros((24, 32), np.uint8))
    return {"layout": {"images": ".", "masks": ".", "mask_name": "{stem}_mask*",
                       "class_folders": ["benign", "malignant"]},
            "image_class": {"source": "folder"}}


def conflicting_masks(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b")
    other = np.zeros((24, 32, 3), np.uint8)
    other[5:10, 5:12] = (255, 0, 0)
    save(src / "masks" / "b_mask_1.png", other)
    return {"annotation": {"format": "rgb", "colors": {"background": [0, 0, 0], "lesion": [255, 255, 255],
                                                       "cyst": [255, 0, 0]}},
            "classes": ["background", "lesion", "cyst"],
            "layout": {"images": "images", "masks": "masks", "mask_name": "{stem}_mask*"}}


def three_page_tiff(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b")
    frames = [Image.fromarray(ramp(24, 32, 1)) for _ in range(3)]
    frames[0].save(src / "images" / "b.tif", save_all=True, append_images=frames[1:])
    (src / "images" / "b.png").unlink()
    return {}


def sixteen_bit_tiff(src: Path) -> dict:
    pair(src, "a")
    pair(src, "b")
    (src / "images" / "b.png").unlink()
    save(src / "images" / "b.tif", np.full((24, 32), 1000, np.uint16))
    return {"bit_depth": {"rule": "refuse"}}


def csv_without_the_column(src: Path) -> dict:
    pair(src, "a")
    (src / "diagnosis.csv").write_text("id,diagnosis\na,benign\n")
    return {"image_class": {"source": "csv", "path": "diagnosis.csv", "id_column": "id", "class_column": "TI-RADS"}}


CONVERT_CASES = [
    pytest.param(truncated_png, ("images/b.png", "truncated or corrupt image data"), id="truncated-png"),
    pytest.param(truncated_jpeg, ("images/b.jpg", "truncated or corrupt image data"), id="truncated-jpeg"),
    pytest.param(sixteen_bit_mask, ("masks/b_mask.png", "masks must be 8-bit"), id="16-bit-mask"),
    pytest.param(palette_mask_under_binary, ("masks/b_mask.png", "indexed (palette) mask; use annotation format "
                                             "'palette'"), id="palette-mask-read-as-colours"),
    pytest.param(mask_size_differs, ("masks/b_mask.png", "mask is 32x20 but image b.png is 32x24"),
                 id="mask-size-differs"),
    pytest.param(mask_colour_not_in_map, ("masks/b_mask.png", "not in the class map", "RGB(255, 0, 0) (6 px)"),
                 id="mask-colour-not-in-map"),
    pytest.param(empty_dataset, (str(RAW), "no usable image/mask pairs found (empty dataset)"), id="empty-dataset"),
    pytest.param(image_without_mask, ("images/b.png", "no mask named 'b_mask'"), id="image-without-mask"),
    pytest.param(one_stem_two_extensions, ("images/b.jpg", "two image files share one name: b.jpg, b.png"),
                 id="one-stem-two-extensions"),
    pytest.param(odd_name_of_a_broken_file, (f"images/{ODD_SHOWN}.png", "truncated or corrupt"),
                 id="odd-file-name-named-legibly"),
    pytest.param(odd_names_that_clash, ("images/a_1.png", "output name 'a_1' clashes with", "images/a (1).png"),
                 id="odd-file-names-clash"),
    pytest.param(over_pixel_limit, ("images/b.png", "40x40 = 1600 pixels exceeds the limit of 1000"),
                 id="image-over-pixel-limit"),
    pytest.param(missing_class_folder, (f"{RAW}/malignant", "class folder not found"), id="missing-class-folder"),
    pytest.param(conflicting_masks, ("masks/b_mask_1.png", "35 pixel(s) are 'cyst' here but 'lesion' in b_mask.png"),
                 id="conflicting-masks"),
    pytest.param(three_page_tiff, ("images/b.tif", "3 pages (multi-page TIFF)"), id="three-page-tiff"),
    pytest.param(sixteen_bit_tiff, ("images/b.tif", "pixel mode 'I;16' is not 8-bit", "convert.bit_depth.rule"),
                 id="16-bit-tiff-refused"),
    pytest.param(csv_without_the_column, ("diagnosis.csv", "no column 'TI-RADS' (image_class.class_column)"),
                 id="csv-missing-column"),
]


def assert_convert_refuses(tmp_path: Path, build: Callable[[Path], dict], expected: tuple[str, ...]) -> None:
    """``build`` writes a local source and returns its convert params: fetch succeeds, convert is refused."""
    src, work = tmp_path / "src", tmp_path / "work"
    convert = build(src)
    write_params(work, profile({"kind": "local", "path": str(src)}, **convert))
    fetched = stage(work, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert_refused(stage(work, "convert"), expected)
    assert_absent(work, CONVERTED)


@pytest.mark.parametrize(("build", "expected"), CONVERT_CASES)
def test_convert_refuses(tmp_path: Path, build: Callable[[Path], dict], expected: tuple[str, ...]) -> None:
    assert_convert_refuses(tmp_path, build, expected)


def test_odd_file_names_convert_to_safe_names(tmp_path: Path) -> None:
    """Spaces, parentheses and non-UTF-8 bytes are not an error: outputs get safe names, the manifest the original."""
    src, work = tmp_path / "src", tmp_path / "work"
    pair(src, "a")
    pair(src, ODD)
    write_params(work, profile({"kind": "local", "path": str(src)}))
    for name in ("fetch", "convert"):
        proc = stage(work, name)
        assert proc.returncode == 0, proc.stderr
    manifest = pd.read_csv(work / CONVERTED / "manifest.csv", dtype=str)
    assert manifest["id"].tolist() == ["a", "scan_2"]
    assert manifest["source_image"].tolist() == ["images/a.png", f"images/{ODD_SHOWN}.png"]
    assert (work / CONVERTED / "labels" / "scan_2.png").is_file()


# --------------------------------------------------------------------------- fetch: bad downloads and archives
# Each builder returns the dataset's source settings.
def wrong_checksum(tmp: Path, server: FileServer) -> dict:
    remote = server.publish("b.zip", b"the real bytes", md5=hashlib.md5(b"other bytes").hexdigest())
    return {"kind": "url", "files": [remote.model_dump(exclude_none=True)], "retries": 0}


def truncated_download(tmp: Path, server: FileServer) -> dict:
    remote = server.publish("b.zip", os.urandom(200_000))
    server.faults["b.zip"] = ["truncate"]
    return {"kind": "url", "files": [remote.model_dump(exclude_none=True)], "retries": 0}


def local(archive: Path, **limits) -> dict:
    return {"kind": "local", "path": str(archive), **({"limits": limits} if limits else {})}


FETCH_CASES = [
    pytest.param(wrong_checksum, (f"{DOWNLOADS}/b.zip", "md5 mismatch: expected"), id="wrong-checksum"),
    pytest.param(truncated_download, (f"{DOWNLOADS}/b.zip", "b.zip: transfer cut short"),
                 id="truncated-download"),
    pytest.param(lambda tmp, _: local(zip_archive(tmp / "b.zip", [("../evil.txt", b"x")])),
                 ("b.zip", "member '../evil.txt' has '..' in its path"), id="zip-dotdot"),
    pytest.param(lambda tmp, _: local(zip_archive(tmp / "b.zip", [("/tmp/evil.txt", b"x")])),
                 ("b.zip", "member '/tmp/evil.txt' has an absolute path"), id="zip-absolute-path"),
    pytest.param(lambda tmp, _: local(zip_archive(tmp / "b.zip", [zip_link("images/link", "/etc/passwd")])),
                 ("b.zip", "member 'images/link' is a symbolic link"), id="zip-symlink"),
    pytest.param(lambda tmp, _: local(tar_archive(tmp / "b.tar.gz", "images/../../evil.txt")),
                 ("b.tar.gz", "member 'images/../../evil.txt' has '..' in its path"), id="tar-dotdot"),
    pytest.param(lambda tmp, _: local(tar_archive(tmp / "b.tar.gz", "/tmp/evil.txt")),
                 ("b.tar.gz", "member '/tmp/evil.txt' has an absolute path"), id="tar-absolute-path"),
    pytest.param(lambda tmp, _: local(tar_archive(tmp / "b.tar.gz", "images/link", tarfile.SYMTYPE, "/etc/passwd")),
                 ("b.tar.gz", "member 'images/link' is a symbolic link (to '/etc/passwd')"), id="tar-symlink"),
    pytest.param(lambda tmp, _: local(tar_archive(tmp / "b.tar.gz", "images/link", tarfile.LNKTYPE, "images/a.png")),
                 ("b.tar.gz", "member 'images/link' is a hard link"), id="tar-hardlink"),
    pytest.param(lambda tmp, _: local(zip_archive(tmp / "b.zip", [("images/zeros.png", bytes(4 << 20))])),
                 ("b.zip", "member 'images/zeros.png' expands", "over max_ratio=200; a zip bomb?"),
                 id="zip-bomb-ratio"),
    pytest.param(lambda tmp, _: local(zip_archive(tmp / "b.zip", [("images/big.png", os.urandom(5000))]),
                                      max_total_bytes=1000),
                 ("b.zip", "member 'images/big.png' brings the unpacked size to", "over max_total_bytes=1000"),
                 id="zip-bomb-size-cap"),
]


@pytest.mark.parametrize(("build", "expected"), FETCH_CASES)
def test_fetch_refuses(tmp_path: Path, server: FileServer, build: Callable[[Path, FileServer], dict],
                       expected: tuple[str, ...]) -> None:
    work = tmp_path / "work"
    write_params(work, profile(build(tmp_path, server)))
    assert_refused(stage(work, "fetch"), expected)
    assert_absent(work, RAW, PROVENANCE)
    downloads = work / DOWNLOADS
    assert not downloads.exists() or list(downloads.iterdir()) == []


# --------------------------------------------------------------------------- params.yaml
def unknown_key(p: dict) -> None:
    p["datasets"][DS]["convert"]["colour_space"] = "rgb"


def wrong_type(p: dict) -> None:
    p["augment"] = {"copies": "three"}


def unknown_class(p: dict) -> None:
    p["datasets"][DS]["convert"]["annotation"] = {"format": "binary", "foreground": "tumour"}


# Every stage loads params.yaml through one loader; the rows use different stages to show it.
PARAMS_CASES = [
    pytest.param(unknown_key, "fetch", (f"datasets.{DS}.convert.colour_space: unknown key",),
                 id="params-unknown-key"),
    pytest.param(wrong_type, "convert", ("augment.copies: Input should be a valid integer",), id="params-wrong-type"),
    pytest.param(unknown_class, "fetch", (f"datasets.{DS}.convert.annotation: unknown class 'tumour'; classes are "
                                          "['background', 'lesion']",), id="params-unknown-class"),
]


@pytest.mark.parametrize(("edit", "name", "expected"), PARAMS_CASES)
def test_bad_params_stop_the_stage(tmp_path: Path, edit: Callable[[dict], None], name: str,
                                   expected: tuple[str, ...]) -> None:
    params = profile({"kind": "synthetic", "counts": {"Benign": 1, "Malignant": 1, "Normal": 1}})
    edit(params)
    write_params(tmp_path, params)
    assert_refused(stage(tmp_path, name), ("params.yaml: invalid parameters", *expected))
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- train: NaN loss
@pytest.mark.slow
def test_nan_loss_stops_training_without_a_model(tmp_path: Path) -> None:
    """A learning rate that blows the weights up: the stage names epoch and batch and writes no model."""
    params = {
        "active": ["tiny"],
        "datasets": {"tiny": {
            "source": {"kind": "synthetic", "counts": {"Benign": 3, "Malignant": 3, "Normal": 3},
                       "height": 64, "width": 96, "seed": 1},
            "convert": {"annotation": {"format": "aul_polygons"}, "classes": ["background", "liver", "benign",
                                                                              "malignant"],
                        "channels": 1, "image_class": {"source": "annotation"}}}},
        "augment": {"copies": 1, "size": [32, 48], "workers": 1},
        "split": {"valid": 0.25, "test": 0.25},
        # lr 1e30 makes the weights huge after one step; much larger overflows inside Adam itself.
        "train": {"model": {"base_filters": 4, "depth": 2}, "epochs": 2, "batch_size": 2, "lr": 1.0e30,
                  "threads": 1, "device": "cpu", "preview_images": 1},
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db"},
    }
    write_params(tmp_path, params)
    for name in ("fetch", "convert", "plan", "augment", "split"):
        proc = stage(tmp_path, name, "tiny")
        assert proc.returncode == 0, proc.stderr
    assert_refused(stage(tmp_path, "train", "tiny"), ("loss became", "at epoch 1, batch ", "lower train.lr"))
    assert_absent(tmp_path, Path("models/tiny"), Path("metrics/datasets/tiny/progress"),
                  Path("metrics/datasets/tiny/train.json"), Path("metrics/datasets/tiny/train_history.csv"))
