"""Unpack zip, tar and 7z archives safely.

``is_archive(path)`` tells, from the file's content, whether it is a zip, a
(possibly gzip/bzip2/xz-compressed) tar or a 7z. ``extract_archive(archive,
dest, limits)`` unpacks it into ``dest`` and returns the extracted files' paths
relative to ``dest``. A 7z split into volumes (``X.7z.001``, ``X.7z.002``, ...)
is read through its first volume, with the others beside it joined in numeric
order; ``is_later_volume(path)`` tells the volumes that are not read on their own.

Archives come from the internet, so every member is checked before any byte
is written: its path must stay inside ``dest`` (no ``..``, absolute paths or
drive letters; backslashes count as separators), it must be a plain file or
directory (no symlinks, hardlinks, devices or fifos), and the member count,
the declared total size and the compression ratio must stay within
``limits``. Bytes are counted again while writing, since headers can lie.
Encrypted members are refused: there is no password to give.
Extraction goes to a temporary sibling of ``dest`` that replaces ``dest`` only
once complete, so a refused or broken archive leaves ``dest`` as it was.
macOS metadata (``__MACOSX/``, ``.DS_Store``, ``._*``) is skipped and logged.
Refusals raise ``ArchiveError`` naming the archive and the member.
"""
from __future__ import annotations

import bisect
import contextlib
import functools
import io
import logging
import lzma
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, NoReturn

import py7zr
import py7zr.exceptions
import py7zr.io

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
_VOLUME = re.compile(r"(.+\.7z)\.(\d+)", re.IGNORECASE)  # X.7z.001: volume 1 of a split 7z
# Errors a damaged archive raises while being read (gzip and bz2 raise OSError).
_READ_ERRORS = (
    tarfile.TarError, zipfile.BadZipFile, py7zr.exceptions.ArchiveError, EOFError, OSError, zlib.error,
    lzma.LZMAError,
)

Handle = zipfile.ZipFile | tarfile.TarFile | py7zr.SevenZipFile


class ArchiveError(DataError):
    """An archive is damaged or refused; the message names the member."""


@dataclass(frozen=True)
class _Member:
    name: str  # as stored, for messages
    rel: PurePosixPath | None  # checked path under dest; None for the root entry ("./")
    junk: bool  # macOS metadata, not extracted
    is_dir: bool
    size: int  # declared uncompressed size
    packed: int | None  # compressed size; None when the whole stream is compressed (tar, 7z)
    open_data: Callable[[], IO[bytes] | None] | None  # None for 7z, written in one pass (_write_7z)

    @property
    def extracted(self) -> bool:
        return self.rel is not None and not self.junk


def is_archive(path: Path) -> bool:
    """True if ``path`` is a zip, tar (compressed or not) or 7z file, judged by content."""
    return _kind(Path(path)) is not None


def is_later_volume(path: Path) -> bool:
    """True if ``path`` is volume 2, 3, ... of a split 7z (``X.7z.002``), read with the set's first volume.

    Raises:
        ArchiveError: the set has no first volume beside it, so this one could never be read.
    """
    path = Path(path)
    match = _VOLUME.fullmatch(path.name)
    if match is None or int(match.group(2)) == 1:
        return False
    base, number = match.groups()
    if 1 not in dict(_numbered_volumes(path.parent, base)):
        first = f"{base}.{1:0{len(number)}d}"
        raise ArchiveError(path, f"is a volume of a split archive whose first volume {first} is absent")
    return True


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
            files = _write_members(archive, handle, members, tmp, limits)
    log.info("extracted %d files from %s into %s", len(files), archive, dest)
    return files


# --------------------------------------------------------------------------- reading
def _kind(path: Path) -> str | None:
    if not path.is_file():
        return None
    # 7z first: its six-byte signature at offset 0 is the most specific test.
    if py7zr.is_7zfile(path):
        return "7z"
    # Tar before zip: an uncompressed tar whose last member is a zip would also
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
        raise ArchiveError(archive, "not a zip, tar or 7z archive")
    openers = {"zip": zipfile.ZipFile, "tar": functools.partial(tarfile.open, mode="r:*"), "7z": _open_7z}
    with contextlib.ExitStack() as stack:
        try:
            handle: Handle = stack.enter_context(openers[kind](archive))
        except _READ_ERRORS as exc:
            raise ArchiveError(archive, f"cannot open {kind} archive: {exc}") from exc
        yield handle


@contextlib.contextmanager
def _open_7z(archive: Path) -> Iterator[py7zr.SevenZipFile]:
    volumes = _volumes(archive)
    with _JoinedVolumes(volumes) as stream:
        _check_7z_length(archive, stream, split=len(volumes) > 1)
        try:
            # Given a stream rather than a path, py7zr decompresses on this thread
            # only, so a refusal raised while writing reaches us as it is.
            handle = py7zr.SevenZipFile(stream)
        except py7zr.exceptions.PasswordRequired:
            _encrypted(archive)
        with handle:
            if handle.needs_password():
                _encrypted(archive)
            yield handle


def _list_members(archive: Path, handle: Handle, max_members: int) -> list[_Member]:
    try:
        if isinstance(handle, zipfile.ZipFile):
            return _zip_members(archive, handle, max_members)
        if isinstance(handle, py7zr.SevenZipFile):
            return _7z_members(archive, handle, max_members)
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


def _7z_members(archive: Path, sz: py7zr.SevenZipFile, max_members: int) -> list[_Member]:
    files = list(sz.files)
    if len(files) > max_members:
        _too_many(archive, files[max_members].filename, max_members)
    return [_7z_member(archive, f) for f in files]


def _7z_member(archive: Path, f: py7zr.py7zr.ArchiveFile) -> _Member:
    name = f.filename
    rel = _safe_relpath(archive, name)
    if f.is_symlink or f.is_junction:
        _refuse(archive, name, "is a symbolic link")
    # st_fmt is the Unix file type, None when the archive was written on Windows.
    if f.st_fmt and f.st_fmt not in (stat.S_IFREG, stat.S_IFDIR):
        _refuse(archive, name, f"is a special file (mode {oct(f.st_fmt)})")
    is_dir = f.is_directory or f.st_fmt == stat.S_IFDIR
    # Each member's compressed size is known only for the first of a solid
    # block, so the ratio is judged like a tar's: over the archive so far.
    return _Member(name, rel, _is_junk(rel), is_dir, 0 if is_dir else f.uncompressed, None, None)


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


# --------------------------------------------------------------------------- split 7z volumes
def _volumes(archive: Path) -> list[Path]:
    """The files that hold ``archive``: itself, or for ``X.7z.001`` every volume of the set, in order."""
    match = _VOLUME.fullmatch(archive.name)
    if match is None or int(match.group(2)) != 1:
        return [archive]
    base, first = match.groups()
    numbered = _numbered_volumes(archive.parent, base)
    numbers = [n for n, _ in numbered]
    expected = list(range(1, len(numbered) + 1))
    if numbers != expected:
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        if missing:
            name = f"{base}.{missing[0]:0{len(first)}d}"
            raise ArchiveError(archive, f"volume {name} of this split archive is missing")
        names = ", ".join(p.name for _, p in numbered)
        raise ArchiveError(archive, f"its volumes are not numbered 1, 2, 3, ... once each: {names}")
    return [p for _, p in numbered]


def _numbered_volumes(folder: Path, base: str) -> list[tuple[int, Path]]:
    """``(number, path)`` for each ``<base>.<number>`` file in ``folder``, by number."""
    pattern = re.compile(re.escape(base) + r"\.(\d+)")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name)) and p.is_file()]
    return sorted(found)


class _JoinedVolumes(io.RawIOBase):
    """Files read back to back as one seekable, read-only stream; reads run across their boundaries."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.name = str(paths[0])
        self._files: list[IO[bytes]] = []
        self._starts = [0]  # offset of each file in the stream, then the stream's length
        try:
            for path in paths:
                self._files.append(open(path, "rb"))
                self._starts.append(self._starts[-1] + path.stat().st_size)
        except BaseException:
            self.close()
            raise
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset}, before the start of {self.name}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._starts[-1]:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            volume = self._files[i]
            volume.seek(self._pos - self._starts[i])
            n = volume.readinto(view[done : done + self._starts[i + 1] - self._pos])
            if not n:  # the file shrank after it was measured
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _check_7z_length(archive: Path, stream: IO[bytes], split: bool) -> None:
    """Refuse a 7z of another length than its start header declares.

    Shorter: cut short, or a split set missing its last volumes. Longer is
    refused only for a split set, whose extra bytes would be a stray volume
    (one left from another set); a single file may carry trailing padding.
    """
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    start = stream.read(32)  # signature, version, CRC, then the offset and size of the header at the end
    stream.seek(0)
    if len(start) < 32:
        raise ArchiveError(archive, f"is truncated: {size} bytes, shorter than a 7z start header")
    if zlib.crc32(start[12:32]) != struct.unpack_from("<I", start, 8)[0]:
        raise ArchiveError(archive, "damaged archive: its 7z start header fails its CRC check")
    offset, length = struct.unpack_from("<QQ", start, 12)
    declared = 32 + offset + length
    if size < declared:
        raise ArchiveError(
            archive, f"is truncated: {size} bytes of the {declared} its start header declares "
            "(a volume cut short, or the last volumes of a split archive missing?)",
        )
    if split and size > declared:
        raise ArchiveError(
            archive, f"its volumes hold {size} bytes, {size - declared} more than its start header declares "
            "(a volume left from another set?)",
        )


# --------------------------------------------------------------------------- checks
def _check_plan(archive: Path, members: list[_Member], limits: ArchiveLimits) -> None:
    """Refuse, before writing, what the headers already show to be too big or inconsistent."""
    archive_bytes = sum(v.stat().st_size for v in _volumes(archive))
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
def _write_members(
    archive: Path, handle: Handle, members: list[_Member], root: Path, limits: ArchiveLimits
) -> list[Path]:
    targets = _make_room(archive, members, root)
    if isinstance(handle, py7zr.SevenZipFile):
        _write_7z(archive, handle, targets, root, limits.max_total_bytes)
    else:
        budget = limits.max_total_bytes
        for m, target in targets:
            budget -= _write_file(archive, m, target, budget)
    return [target.relative_to(root) for _, target in targets]


def _make_room(archive: Path, members: list[_Member], root: Path) -> list[tuple[_Member, Path]]:
    """Create the directories and return each file member with the path it is written to."""
    root_resolved = root.resolve()
    targets = []
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
        targets.append((m, target))
    return targets


def _write_file(archive: Path, m: _Member, target: Path, budget: int) -> int:
    """Stream one member to ``target`` and return its size, counting what is really written."""
    count = 0
    with _open_member(archive, m) as src, open(target, "xb") as dst:
        for chunk in _read_chunks(archive, m.name, src):
            count += len(chunk)
            _check_count(archive, m, count, budget)
            dst.write(chunk)
    _check_complete(archive, m, count)
    return count


def _check_count(archive: Path, m: _Member, count: int, budget: int) -> None:
    if count > m.size:
        _refuse(archive, m.name, f"holds more data than the {m.size} bytes its header declares")
    if count > budget:
        _refuse(archive, m.name, "brings the unpacked size over max_total_bytes")


def _check_complete(archive: Path, m: _Member, count: int) -> None:
    if count != m.size:
        _refuse(archive, m.name, f"holds {count} bytes, but its header declares {m.size}")


@contextlib.contextmanager
def _open_member(archive: Path, m: _Member) -> Iterator[IO[bytes]]:
    assert m.open_data is not None, "7z members are written by _write_7z"
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


def _write_7z(
    archive: Path, sz: py7zr.SevenZipFile, targets: list[tuple[_Member, Path]], root: Path, budget: int
) -> None:
    """Decompress every file member in one pass, py7zr handing each one's bytes to a counting sink.

    A solid 7z is one compressed stream, so members are not opened one by one
    as in a zip: reaching the last would decompress all before it each time.
    """
    root = root.absolute()  # py7zr names each output by its absolute path
    with _SinkFactory(archive, root, targets, budget) as factory:
        try:
            sz.extract(path=root, targets=[m.name for m, _ in targets], factory=factory)
        except py7zr.exceptions.CrcError as exc:
            what = f"member {exc.args[-1]!r}" if exc.args and exc.args[-1] else "a compressed block"
            raise ArchiveError(archive, f"damaged archive: {what} fails its CRC check") from exc
        except _READ_ERRORS as exc:
            raise ArchiveError(archive, f"damaged archive: {exc}") from exc
        factory.check_complete()


class _Sink(py7zr.io.Py7zIO):
    """One 7z member's file, counting the bytes really written against its header and the size budget."""

    def __init__(self, archive: Path, member: _Member, target: Path, budget: int) -> None:
        self.archive, self.member, self.budget = archive, member, budget
        self.count = 0
        self._file = open(target, "xb")
        if member.size == 0:
            self._file.close()

    def write(self, s: bytes | bytearray) -> int:
        self.count += len(s)
        _check_count(self.archive, self.member, self.count, self.budget)
        self._file.write(s)
        if self.count == self.member.size:  # py7zr never closes its writers
            self._file.close()
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        raise io.UnsupportedOperation("a sink is write-only")

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0  # py7zr rewinds a finished writer; nothing reads it back

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def size(self) -> int:
        return self.count

    def close(self) -> None:
        self._file.close()


class _SinkFactory(py7zr.io.WriterFactory):
    """Gives py7zr the sink of the checked member it is about to write; anything else is refused."""

    def __init__(self, archive: Path, root: Path, targets: list[tuple[_Member, Path]], budget: int) -> None:
        self._archive, self._root, self._budget = archive, root, budget
        self._waiting = {m.rel: (m, target) for m, target in targets}
        self._sinks: list[_Sink] = []

    def create(self, filename: str) -> _Sink:
        path = Path(filename)
        rel = PurePosixPath(path.relative_to(self._root).as_posix()) if path.is_relative_to(self._root) else None
        if rel not in self._waiting:
            raise ArchiveError(self._archive, f"py7zr asked to write {filename!r}, which is no checked member")
        m, target = self._waiting.pop(rel)  # popped, so a second write to one path is refused
        if self._sinks:  # members are written one after another, so the one before is done
            self._budget -= self._sinks[-1].count
        sink = _Sink(self._archive, m, target, self._budget)
        self._sinks.append(sink)
        return sink

    def check_complete(self) -> None:
        for sink in self._sinks:
            _check_complete(self._archive, sink.member, sink.count)
        for m, _ in self._waiting.values():
            _refuse(self._archive, m.name, "was not extracted (no data for it in the archive)")

    def __enter__(self) -> _SinkFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        for sink in self._sinks:
            sink.close()


# --------------------------------------------------------------------------- messages
def _refuse(archive: Path, name: str, problem: str) -> NoReturn:
    raise ArchiveError(archive, f"member {name!r} {problem}")


def _encrypted(archive: Path) -> NoReturn:
    raise ArchiveError(archive, "is encrypted (password-protected); unpack it with its password and use the files")


def _too_many(archive: Path, name: str, max_members: int) -> NoReturn:
    _refuse(archive, name, f"is member number {max_members + 1}, over max_members={max_members}")


def _log_skipped(archive: Path, members: list[_Member]) -> None:
    skipped = [m.name for m in members if m.junk]
    if skipped:
        log.info("%s: skipped %d macOS metadata member(s), e.g. %s", archive, len(skipped), skipped[0])
        log.debug("%s: skipped %s", archive, skipped)
