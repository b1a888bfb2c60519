"""``medseg.archive``: real zip, tar and 7z files built in ``tmp_path``, good and hostile, and the shared 7z sample."""
from __future__ import annotations

import io
import itertools
import logging
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import py7zr
import pytest

from conftest import shared_dataset
from medseg.config import ArchiveLimits
from medseg.sources.archive import ArchiveError, extract_archive, is_archive, is_later_volume

LIMITS = ArchiveLimits()
IMAGE = os.urandom(2_500_000)  # incompressible and larger than one copy chunk
MASK = bytes(1000)
PHOTO = IMAGE[:200_000]  # for 7z, which py7zr compresses slowly


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


TarMode = Literal["w", "w:gz", "w:bz2", "w:xz"]


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: TarMode = "w:gz") -> Path:
    """Regular files are given as (name, data); anything else as a ready TarInfo."""
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _7z(path: Path, members: dict[str, bytes]) -> Path:
    """Names are stored as given: py7zr's public writestr refuses unsafe ones, which hostile archives never do."""
    with py7zr.SevenZipFile(path, "w") as sz:
        for name, data in members.items():
            sz._writestr(data, name)
    return path


def _split(archive: Path, cuts: list[int], width: int = 3) -> list[Path]:
    """Cut ``archive``'s bytes at ``cuts`` into volumes ``<archive>.001``, ``.002``, ... and remove it."""
    data = archive.read_bytes()
    bounds = [0, *cuts, len(data)]
    volumes = [archive.with_name(f"{archive.name}.{i + 1:0{width}d}") for i in range(len(bounds) - 1)]
    for volume, (start, end) in zip(volumes, itertools.pairwise(bounds), strict=True):
        volume.write_bytes(data[start:end])
    archive.unlink()
    return volumes


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- detection
@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_variants_are_archives(tmp_path: Path, mode: TarMode) -> None:
    assert is_archive(_tar(tmp_path / "data.bin", [("a.txt", b"a")], mode))


def test_zip_is_archive_whatever_its_name(tmp_path: Path) -> None:
    assert is_archive(_zip(tmp_path / "data.bin", {"a.txt": b"a"}))


def test_7z_is_archive_whatever_its_name(tmp_path: Path) -> None:
    assert is_archive(_7z(tmp_path / "data.bin", {"a.txt": b"a"}))


def test_later_volumes_are_no_archives_of_their_own(tmp_path: Path) -> None:
    first, second = _split(_7z(tmp_path / "train.7z", {"a.bin": PHOTO}), [1000])

    assert is_archive(first) and not is_later_volume(first)
    assert not is_archive(second) and is_later_volume(second)
    first.unlink()
    with pytest.raises(ArchiveError, match=re.escape("whose first volume train.7z.001 is absent")):
        is_later_volume(second)


def test_other_files_are_not_archives(tmp_path: Path) -> None:
    (tmp_path / "image.zip").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(3000))
    assert not is_archive(tmp_path / "image.zip")
    assert not is_archive(tmp_path)
    assert not is_archive(tmp_path / "missing.tar")


# --------------------------------------------------------------------------- good archives
def test_zip_extracts_files_and_skips_macos_junk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    archive = _zip(
        tmp_path / "busi.zip",
        {
            "images/": b"",
            "images/001.png": IMAGE,
            "masks\\001.png": MASK,  # written by a Windows tool
            "__MACOSX/images/._001.png": b"resource fork",
            "images/.DS_Store": b"finder",
        },
    )
    dest = tmp_path / "raw"

    with caplog.at_level(logging.INFO, logger="medseg.sources.archive"):
        files = extract_archive(archive, dest, LIMITS)

    assert files == [Path("images/001.png"), Path("masks/001.png")]
    assert _tree(dest) == {"images/001.png": IMAGE, "masks/001.png": MASK}
    assert "skipped 2 macOS metadata" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busi.zip", "raw"]  # no temporary folder left


def test_tar_gz_extracts_files(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "aul.tgz",
        [
            _special("./", tarfile.DIRTYPE),
            ("./Benign/image/1.jpg", IMAGE),
            ("./Benign/segmentation/liver/1.json", b'{"points": []}'),
            ("./._1.jpg", b"resource fork"),
        ],
    )
    dest = tmp_path / "raw"

    files = extract_archive(archive, dest, LIMITS)

    assert files == [Path("Benign/image/1.jpg"), Path("Benign/segmentation/liver/1.json")]
    assert _tree(dest) == {"Benign/image/1.jpg": IMAGE, "Benign/segmentation/liver/1.json": b'{"points": []}'}


def test_7z_extracts_files_and_skips_macos_junk(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    archive = tmp_path / "tsd.7z"
    with py7zr.SevenZipFile(archive, "w") as sz:
        sz.write(tmp_path / "images", "images")  # a directory member
        sz.writestr(PHOTO, "images/001.jpg")
        sz.writestr(MASK, "masks/001.jpg")
        sz.writestr(b"", "masks/empty.txt")
        sz.writestr(b"resource fork", "__MACOSX/images/._001.jpg")
    dest = tmp_path / "raw"

    files = extract_archive(archive, dest, LIMITS)

    assert files == [Path("images/001.jpg"), Path("masks/001.jpg"), Path("masks/empty.txt")]
    assert _tree(dest) == {"images/001.jpg": PHOTO, "masks/001.jpg": MASK, "masks/empty.txt": b""}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "raw", "tsd.7z"]  # no temporary folder left


@pytest.mark.parametrize(("count", "width"), [(3, 3), (11, 1)], ids=["001-003", "1-11"])
def test_split_7z_volumes_are_joined_in_numeric_order(tmp_path: Path, count: int, width: int) -> None:
    """With 11 unpadded volumes, name order (1, 10, 11, 2, ...) would scramble the bytes."""
    vols = tmp_path / "vols"
    vols.mkdir()
    archive = _7z(vols / "train.7z", {"train/images/1.jpg": PHOTO, "train/masks/1.jpg": MASK})
    size = archive.stat().st_size
    # Evenly spaced cuts, the last one 20 bytes from the end: inside the header, which 7z writes last.
    cuts = [size * i // (count - 1) for i in range(1, count - 1)] + [size - 20]
    volumes = _split(archive, cuts, width)

    files = extract_archive(volumes[0], tmp_path / "out", LIMITS)

    assert files == [Path("train/images/1.jpg"), Path("train/masks/1.jpg")]
    assert _tree(tmp_path / "out") == {"train/images/1.jpg": PHOTO, "train/masks/1.jpg": MASK}


def test_shared_7z_sample_extracts(tmp_path: Path) -> None:
    """The real Retinal-Vessel ``train.7z.001``: a complete set of one volume, 16 image/mask pairs inside."""
    archive = shared_dataset("tsd-retinal-vessel-7z") / "train.7z.001"
    dest = tmp_path / "train"

    files = extract_archive(archive, dest, LIMITS)

    images = sorted(f.name for f in files if f.parent == Path("train/images"))
    masks = sorted(f.name for f in files if f.parent == Path("train/masks"))
    assert len(files) == 32 and len(images) == 16 and images == masks
    assert all((dest / f).read_bytes()[:3] == b"\xff\xd8\xff" for f in files)  # JPEG


def test_extraction_replaces_previous_content(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "old.txt").write_text("from a previous run")

    extract_archive(_zip(tmp_path / "a.zip", {"new.txt": b"new"}), dest, LIMITS)

    assert _tree(dest) == {"new.txt": b"new"}


# --------------------------------------------------------------------------- hostile archives
def _zip_symlink(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo("link")
        info.create_system = 3  # Unix, so the mode bits below are meaningful
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return path


def _zip_bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("bomb.bin", bytes(50_000_000))
    return path


def _tar_gz_bomb(path: Path) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo("bomb.bin")
        info.size = 50_000_000
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    return path


def _7z_symlink(path: Path) -> Path:
    link = path.with_name("link")
    link.symlink_to("/etc/passwd")
    with py7zr.SevenZipFile(path, "w") as sz:
        sz.write(link, "link")  # first: py7zr 1.0 fails to store a link after a writestr member
        sz.writestr(b"fine", "ok.txt")
    link.unlink()
    return path


def _7z_bomb(path: Path) -> Path:
    with py7zr.SevenZipFile(path, "w") as sz:
        sz.writestr(bytes(5_000_000), "bomb.bin")  # about 1 kB packed
    return path


Builder = Callable[[Path], Path]
HOSTILE: list[tuple[str, Builder, str, ArchiveLimits]] = [
    ("zip-dotdot", lambda p: _zip(p / "a.zip", {"ok.txt": b"1", "../escape": b"x"}), "../escape", LIMITS),
    ("zip-nested-dotdot", lambda p: _zip(p / "a.zip", {"a/../../escape": b"x"}), "a/../../escape", LIMITS),
    ("zip-absolute", lambda p: _zip(p / "a.zip", {"/abs/path": b"x"}), "/abs/path", LIMITS),
    ("zip-backslash", lambda p: _zip(p / "a.zip", {"..\\escape": b"x"}), "..\\escape", LIMITS),
    ("zip-drive-letter", lambda p: _zip(p / "a.zip", {"C:/escape": b"x"}), "C:/escape", LIMITS),
    ("zip-symlink", lambda p: _zip_symlink(p / "a.zip"), "link", LIMITS),
    ("tar-dotdot", lambda p: _tar(p / "a.tgz", [("ok.txt", b"1"), ("../escape", b"x")]), "../escape", LIMITS),
    ("tar-absolute", lambda p: _tar(p / "a.tgz", [("/abs/path", b"x")]), "/abs/path", LIMITS),
    ("tar-symlink", lambda p: _tar(p / "a.tgz", [_special("link", tarfile.SYMTYPE, "/etc")]), "link", LIMITS),
    (
        "tar-hardlink",
        lambda p: _tar(p / "a.tgz", [("ok.txt", b"1"), _special("hard", tarfile.LNKTYPE, "/etc/passwd")]),
        "hard",
        LIMITS,
    ),
    ("tar-fifo", lambda p: _tar(p / "a.tgz", [_special("pipe", tarfile.FIFOTYPE)]), "pipe", LIMITS),
    ("tar-chardev", lambda p: _tar(p / "a.tgz", [_special("null", tarfile.CHRTYPE)]), "null", LIMITS),
    (
        "zip-too-many",
        lambda p: _zip(p / "a.zip", {f"f{i}": b"x" for i in range(5)}),
        "f3",
        ArchiveLimits(max_members=3),
    ),
    (
        "tar-too-many",
        lambda p: _tar(p / "a.tar", [(f"f{i}", b"x") for i in range(5)], "w"),
        "f3",
        ArchiveLimits(max_members=3),
    ),
    ("zip-bomb", lambda p: _zip_bomb(p / "a.zip"), "bomb.bin", ArchiveLimits(max_ratio=100)),
    ("tar-gz-bomb", lambda p: _tar_gz_bomb(p / "a.tgz"), "bomb.bin", ArchiveLimits(max_ratio=100)),
    (
        "zip-total-size",
        lambda p: _zip(p / "a.zip", {"a": os.urandom(600), "b": os.urandom(600)}),
        "b",
        ArchiveLimits(max_total_bytes=1000),
    ),
    (
        "tar-total-size",
        lambda p: _tar(p / "a.tgz", [("a", os.urandom(600)), ("b", os.urandom(600))]),
        "b",
        ArchiveLimits(max_total_bytes=1000),
    ),
    ("7z-dotdot", lambda p: _7z(p / "a.7z", {"ok.txt": b"1", "../escape": b"x"}), "../escape", LIMITS),
    ("7z-nested-dotdot", lambda p: _7z(p / "a.7z", {"a/../../escape": b"x"}), "a/../../escape", LIMITS),
    ("7z-absolute", lambda p: _7z(p / "a.7z", {"/abs/path": b"x"}), "/abs/path", LIMITS),
    ("7z-backslash", lambda p: _7z(p / "a.7z", {"..\\escape": b"x"}), "../escape", LIMITS),  # py7zr reads \ as /
    ("7z-drive-letter", lambda p: _7z(p / "a.7z", {"C:/escape": b"x"}), "C:/escape", LIMITS),
    ("7z-symlink", lambda p: _7z_symlink(p / "a.7z"), "link", LIMITS),
    (
        "7z-too-many",
        lambda p: _7z(p / "a.7z", {f"f{i}": b"x" for i in range(5)}),
        "f3",
        ArchiveLimits(max_members=3),
    ),
    ("7z-bomb", lambda p: _7z_bomb(p / "a.7z"), "bomb.bin", ArchiveLimits(max_ratio=100)),
    (
        "7z-bomb-total-size",
        lambda p: _7z_bomb(p / "a.7z"),
        "bomb.bin",
        ArchiveLimits(max_total_bytes=4_000_000),
    ),
    (
        "7z-total-size",
        lambda p: _7z(p / "a.7z", {"a": os.urandom(600), "b": os.urandom(600)}),
        "b",
        ArchiveLimits(max_total_bytes=1000),
    ),
    ("7z-file-as-dir", lambda p: _7z(p / "a.7z", {"a": b"1", "a/b": b"2"}), "a", LIMITS),
    ("tar-duplicate", lambda p: _tar(p / "a.tgz", [("a", b"1"), ("./a", b"2")]), "./a", LIMITS),
    ("tar-file-as-dir", lambda p: _tar(p / "a.tgz", [("a", b"1"), ("a/b", b"2")]), "a", LIMITS),
]


@pytest.mark.parametrize(("builder", "member", "limits"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_archive_is_refused_and_leaves_nothing(
    tmp_path: Path, builder: Builder, member: str, limits: ArchiveLimits
) -> None:
    archives, work = tmp_path / "archives", tmp_path / "work"
    archives.mkdir()
    archive = builder(archives)
    dest = work / "out"

    with pytest.raises(ArchiveError, match=re.escape(f"member {member!r} ")) as err:
        extract_archive(archive, dest, limits)

    assert err.value.path == archive
    # Refused before writing anything: no dest, no temporary sibling, no "../escape", not even dest's parent.
    assert sorted(tmp_path.rglob("*")) == [archives, archive]
    assert not work.exists()
    assert not Path("/abs/path").exists()


def test_failed_extraction_keeps_previous_dest(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "kept.txt").write_text("previous good extraction")
    archive = _zip(tmp_path / "a.zip", {"new.txt": b"1", "../escape": b"x"})

    with pytest.raises(ArchiveError):
        extract_archive(archive, dest, LIMITS)

    assert _tree(dest) == {"kept.txt": b"previous good extraction"}


def test_header_understating_size_is_caught_while_writing(tmp_path: Path) -> None:
    """The first member is fine and gets written; the second lies about its size in the zip directory."""
    archive = _zip(tmp_path / "a.zip", {"good.bin": os.urandom(5000), "liar.bin": os.urandom(5000)})
    data = bytearray(archive.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # central directory record of the last member
    data[entry + 24 : entry + 28] = (100).to_bytes(4, "little")  # "uncompressed size"
    archive.write_bytes(bytes(data))
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError, match=re.escape("member 'liar.bin' ")):
        extract_archive(archive, dest, LIMITS)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_damaged_archive_is_an_archive_error(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tgz", [("a", os.urandom(50_000))])
    archive.write_bytes(archive.read_bytes()[:20_000])

    with pytest.raises(ArchiveError, match=re.escape("a.tgz: damaged archive")):
        extract_archive(archive, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()


def test_damaged_7z_is_an_archive_error(tmp_path: Path) -> None:
    """The headers are sound, the compressed data is not: found while decompressing, after dest's parent exists."""
    archive = _7z(tmp_path / "a.7z", {"a": PHOTO, "b": PHOTO[::-1]})
    data = bytearray(archive.read_bytes())
    data[1000:1100] = bytes(100)
    archive.write_bytes(bytes(data))
    dest = tmp_path / "out"

    with pytest.raises(ArchiveError, match=re.escape("a.7z: damaged archive")):
        extract_archive(archive, dest, LIMITS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.7z"]


@pytest.fixture
def split_set(tmp_path: Path) -> list[Path]:
    """Three volumes of one 7z, in ``tmp_path / "vols"``."""
    (tmp_path / "vols").mkdir()
    archive = _7z(tmp_path / "vols" / "train.7z", {"train/images/1.jpg": PHOTO})
    size = archive.stat().st_size
    return _split(archive, [size // 3, 2 * size // 3])


def _assert_refused_leaving_dest(tmp_path: Path, first: Path, message: str) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "kept.txt").write_text("previous good extraction")

    with pytest.raises(ArchiveError, match=re.escape(message)) as err:
        extract_archive(first, dest, LIMITS)

    assert err.value.path == first
    assert _tree(dest) == {"kept.txt": b"previous good extraction"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "vols"]  # no temporary sibling


def test_split_7z_missing_a_middle_volume_names_it(tmp_path: Path, split_set: list[Path]) -> None:
    split_set[1].unlink()

    _assert_refused_leaving_dest(tmp_path, split_set[0], "volume train.7z.002 of this split archive is missing")


@pytest.mark.parametrize("cut", ["last-volume-short", "last-volume-missing"])
def test_truncated_split_7z_is_refused(tmp_path: Path, split_set: list[Path], cut: str) -> None:
    last = split_set[-1]
    if cut == "last-volume-short":
        last.write_bytes(last.read_bytes()[:-5])
    else:
        last.unlink()

    _assert_refused_leaving_dest(tmp_path, split_set[0], "train.7z.001: is truncated")


def test_split_7z_with_a_stray_volume_is_refused(tmp_path: Path, split_set: list[Path]) -> None:
    """A fourth volume, left from another set, would be joined on: refused rather than silently ignored."""
    split_set[0].with_name("train.7z.004").write_bytes(os.urandom(100))

    _assert_refused_leaving_dest(tmp_path, split_set[0], "100 more than its start header declares")


@pytest.mark.parametrize("header_encryption", [False, True], ids=["data", "data-and-names"])
def test_encrypted_7z_is_refused(tmp_path: Path, header_encryption: bool) -> None:
    archive = tmp_path / "a.7z"
    with py7zr.SevenZipFile(archive, "w", password="secret", header_encryption=header_encryption) as sz:
        sz.writestr(b"private", "a.txt")

    with pytest.raises(ArchiveError, match=re.escape("a.7z: is encrypted")):
        extract_archive(archive, tmp_path / "out", LIMITS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.7z"]


def test_non_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an archive")

    with pytest.raises(ArchiveError, match="not a zip, tar or 7z archive"):
        extract_archive(path, tmp_path / "out", LIMITS)
