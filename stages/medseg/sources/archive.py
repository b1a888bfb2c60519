"""Unpack zip and tar archives safely.

``is_archive(path)`` tells, from the file's content, whether it is a zip or a
(possibly gzip/bzip2/xz-compressed) tar. ``extract_archive(archive, dest,
limits)`` unpacks it into ``dest`` and returns the extracted files' paths
relative to ``dest``.

Archives come from the internet, so every member is checked before any byte
is written: its path must stay inside ``dest`` (no ``..``, absolute paths or
drive letters; backslashes count as separators), it must be a plain file or
directory (no symlinks, hardlinks, devices or fifos), and the member count,
the declared total size and the compression ratio must stay within
``limits``. Bytes are counted again while writing, since headers can lie.
Extraction goes to a temporary sibling of ``dest`` that replaces ``dest`` only
once complete, so a refused or broken archive leaves ``dest`` as it was.
macOS metadata (``__MACOSX/``, ``.DS_Store``, ``._*``) is skipped and logged.
Refusals raise ``ArchiveError`` naming the archive and the member.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, NoReturn

from medseg.config import ArchiveLimits
from medseg.io.atomic import atomic_dir
from medseg.io.errors import DataError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
RATIO_FLOOR_BYTES = 1 << 20
"""Members smaller than this skip the ratio check: a small blank mask or padding
file compresses extremely well yet cannot hurt; the total-size cap bounds them."""

_DRIVE = re.compile(r"^[A-Za-z]:")
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
# Errors a damaged archive raises while being read (gzip and bz2 raise OSError).
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError)

Handle = zipfile.ZipFile | tarfile.TarFile


class ArchiveError(DataError):
    """An archive is damaged or refused; the message names the member."""


@dataclass(frozen=True)
class _Member:
    name: str  # as stored, for messages
    rel: PurePosixPath | None  # checked path under dest; None for the root entry ("./")
    junk: bool  # macOS metadata, not extracted
    is_dir: bool
    size: int  # declared uncompressed size
    packed: int | None  # compressed size; None when the whole stream is compressed (tar)
    open_data: Callable[[], IO[bytes] | None]

    @property
    def extracted(self) -> bool:
        return self.rel is not None and not self.junk


def is_archive(path: Path) -> bool:
    """True if ``path`` is a zip or tar file (compressed or not), judged by content."""
    return _kind(Path(path)) is not None


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits) -> list[Path]:
    """Extract ``archive`` into ``dest`` (replacing it) and return the files written, relative to ``dest``.

    Raises:
        ArchiveError: the archive is damaged, not an archive, or a member is
            refused (unsafe path or type, or over ``limits``).
    """
    archive, dest = Path(archive), Path(dest)
    with _open(archive) as handle:
        members = _list_members(archive, handle, limits.max_members)
        _check_plan(archive, members, limits)
        _log_skipped(archive, members)
        with atomic_dir(dest) as tmp:
            files = _write_members(archive, members, tmp, limits)
    log.info("extracted %d files from %s into %s", len(files), archive, dest)
    return files


# --------------------------------------------------------------------------- reading
def _kind(path: Path) -> str | None:
    if not path.is_file():
        return None
    # Tar first: an uncompressed tar whose last member is a zip would also
    # pass is_zipfile, which looks for a zip directory near the end.
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    return None


@contextlib.contextmanager
def _open(archive: Path) -> Iterator[Handle]:
    kind = _kind(archive)
    if kind is None:
        raise ArchiveError(archive, "not a zip or tar archive")
    try:
        handle: Handle = zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive, "r:*")
    except _READ_ERRORS as exc:
        raise ArchiveError(archive, f"cannot open {kind} archive: {exc}") from exc
    with handle:
        yield handle


def _list_members(archive: Path, handle: Handle, max_members: int) -> list[_Member]:
    try:
        if isinstance(handle, zipfile.ZipFile):
            return _zip_members(archive, handle, max_members)
        return _tar_members(archive, handle, max_members)
    except _READ_ERRORS as exc:
        raise ArchiveError(archive, f"damaged archive: {exc}") from exc


def _zip_members(archive: Path, zf: zipfile.ZipFile, max_members: int) -> list[_Member]:
    infos = zf.infolist()
    if len(infos) > max_members:
        _too_many(archive, infos[max_members].filename, max_members)
    return [_zip_member(archive, zf, info) for info in infos]


def _zip_member(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    name = info.filename
    rel = _safe_relpath(archive, name)
    # Unix tools keep st_mode in the high 16 bits; a zero file type means "not recorded".
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        _refuse(archive, name, "is a symbolic link")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        _refuse(archive, name, f"is a special file (mode {oct(mode)})")
    if info.flag_bits & 0x1:
        _refuse(archive, name, "is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        _refuse(archive, name, f"uses compression method {info.compress_type}, which Python cannot read; repack it")
    opener = functools.partial(zf.open, info)
    return _Member(name, rel, _is_junk(rel), info.is_dir(), info.file_size, info.compress_size, opener)


def _tar_members(archive: Path, tf: tarfile.TarFile, max_members: int) -> list[_Member]:
    members = []
    # Iterated rather than getmembers() so that a flood of headers is stopped early.
    for count, info in enumerate(tf, start=1):
        if count > max_members:
            _too_many(archive, info.name, max_members)
        members.append(_tar_member(archive, tf, info))
    return members


def _tar_member(archive: Path, tf: tarfile.TarFile, info: tarfile.TarInfo) -> _Member:
    rel = _safe_relpath(archive, info.name)
    if info.issym():
        _refuse(archive, info.name, f"is a symbolic link (to {info.linkname!r})")
    if info.islnk():
        _refuse(archive, info.name, f"is a hard link (to {info.linkname!r})")
    if not (info.isreg() or info.isdir()):
        _refuse(archive, info.name, "is a device, fifo or other special file")
    size = info.size if info.isreg() else 0
    return _Member(info.name, rel, _is_junk(rel), info.isdir(), size, None, functools.partial(tf.extractfile, info))


def _safe_relpath(archive: Path, name: str) -> PurePosixPath | None:
    """The member's path relative to dest, or None for the root entry (``./``)."""
    if "\x00" in name:
        _refuse(archive, name, "has a NUL byte in its name")
    # Windows tools may write backslash separators; read as separators, a
    # "..\\x" is caught here instead of escaping when the data reaches Windows.
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        _refuse(archive, name, "has an absolute path")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        _refuse(archive, name, "has '..' in its path, which could leave the destination")
    return PurePosixPath(*parts) if parts else None


def _is_junk(rel: PurePosixPath | None) -> bool:
    """macOS metadata: resource forks (``__MACOSX/``, ``._*``) and Finder state (``.DS_Store``)."""
    if rel is None:
        return False
    return rel.parts[0] == "__MACOSX" or rel.name == ".DS_Store" or rel.name.startswith("._")


# --------------------------------------------------------------------------- checks
def _check_plan(archive: Path, members: list[_Member], limits: ArchiveLimits) -> None:
    """Refuse, before writing, what the headers already show to be too big or inconsistent."""
    archive_bytes = archive.stat().st_size
    total = 0
    for m in members:
        if not m.extracted or m.is_dir:
            continue
        total += m.size
        if total > limits.max_total_bytes:
            cap = limits.max_total_bytes
            _refuse(archive, m.name, f"brings the unpacked size to {total} bytes, over max_total_bytes={cap}")
        problem = _ratio_problem(m, total, archive_bytes, limits.max_ratio)
        if problem:
            _refuse(archive, m.name, problem)
    _check_paths_unique(archive, members)


def _ratio_problem(m: _Member, total: int, archive_bytes: int, max_ratio: float) -> str | None:
    # A tar is compressed as one stream, so its ratio is that of the archive
    # so far; a zip compresses each member on its own.
    unpacked, packed = (m.size, m.packed) if m.packed is not None else (total, archive_bytes)
    ratio = unpacked / max(packed, 1)
    if unpacked <= RATIO_FLOOR_BYTES or ratio <= max_ratio:
        return None
    what = "expands" if m.packed is not None else "brings the archive's expansion from"
    return f"{what} {packed} bytes to {unpacked} (ratio {ratio:.0f}, over max_ratio={max_ratio:g}; a zip bomb?)"


def _check_paths_unique(archive: Path, members: list[_Member]) -> None:
    files: dict[PurePosixPath, str] = {}
    dirs: set[PurePosixPath] = set()
    for m in members:
        if not m.extracted or m.rel is None:
            continue
        if m.is_dir:
            dirs.add(m.rel)
        elif m.rel in files:
            _refuse(archive, m.name, f"has the same path as member {files[m.rel]!r}")
        else:
            files[m.rel] = m.name
        dirs.update(m.rel.parents)
    for rel in sorted(files.keys() & dirs):
        _refuse(archive, files[rel], "is a file, but other members use it as a directory")


# --------------------------------------------------------------------------- writing
def _write_members(archive: Path, members: list[_Member], root: Path, limits: ArchiveLimits) -> list[Path]:
    root_resolved = root.resolve()
    written: list[Path] = []
    total = 0
    for m in members:
        if not m.extracted or m.rel is None:
            continue
        target = root.joinpath(*m.rel.parts)
        # Defence in depth: the path checks above already rule this out.
        if not target.resolve().is_relative_to(root_resolved):
            _refuse(archive, m.name, "resolves outside the destination")
        if m.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        total += _write_file(archive, m, target, limits.max_total_bytes - total)
        written.append(Path(*m.rel.parts))
    return written


def _write_file(archive: Path, m: _Member, target: Path, budget: int) -> int:
    """Stream one member to ``target`` and return its size, counting what is really written."""
    count = 0
    with _open_member(archive, m) as src, open(target, "xb") as dst:
        for chunk in _read_chunks(archive, m.name, src):
            count += len(chunk)
            if count > m.size:
                _refuse(archive, m.name, f"holds more data than the {m.size} bytes its header declares")
            if count > budget:
                _refuse(archive, m.name, "brings the unpacked size over max_total_bytes")
            dst.write(chunk)
    if count != m.size:
        _refuse(archive, m.name, f"holds {count} bytes, but its header declares {m.size}")
    return count


@contextlib.contextmanager
def _open_member(archive: Path, m: _Member) -> Iterator[IO[bytes]]:
    try:
        src = m.open_data()
    except _READ_ERRORS as exc:
        raise ArchiveError(archive, f"member {m.name!r} cannot be read: {exc}") from exc
    if src is None:  # only for non-regular tar members, which were refused earlier
        _refuse(archive, m.name, "has no data to extract")
    with src:
        yield src


def _read_chunks(archive: Path, name: str, src: IO[bytes]) -> Iterator[bytes]:
    while True:
        try:
            chunk = src.read(CHUNK_BYTES)
        except _READ_ERRORS as exc:
            raise ArchiveError(archive, f"member {name!r} cannot be read: {exc}") from exc
        if not chunk:
            return
        yield chunk


# --------------------------------------------------------------------------- messages
def _refuse(archive: Path, name: str, problem: str) -> NoReturn:
    raise ArchiveError(archive, f"member {name!r} {problem}")


def _too_many(archive: Path, name: str, max_members: int) -> NoReturn:
    _refuse(archive, name, f"is member number {max_members + 1}, over max_members={max_members}")


def _log_skipped(archive: Path, members: list[_Member]) -> None:
    skipped = [m.name for m in members if m.junk]
    if skipped:
        log.info("%s: skipped %d macOS metadata member(s), e.g. %s", archive, len(skipped), skipped[0])
        log.debug("%s: skipped %s", archive, skipped)
