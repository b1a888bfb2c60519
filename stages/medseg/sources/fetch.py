"""The fetch stage's work: bring a dataset's raw files into a folder.

``fetch_source(source, dest, cache)`` fills the empty folder ``dest`` from
one of four sources (synthetic, url, zenodo, local) and returns a provenance
record: source settings, licence, checksums of what was downloaded or read,
file counts and a digest of the resulting tree. The record holds no time
stamp so the same inputs give the same bytes.

Archives are unpacked, each into its own folder named after it (``train.zip``
and ``train.7z.001``, the first volume of a split 7z, both give ``train/``).
In a local folder a file counts as an archive only when its name and its
content both say so, since data files can be zips inside (``.npz``, ``.xlsx``).
"""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections import Counter
from pathlib import Path

from medseg.config import ArchiveLimits, LocalSource, SyntheticSource, UrlSource, ZenodoSource
from medseg.io.errors import DataError
from medseg.io.images import display_path

from . import synthetic
from .archive import extract_archive, is_archive, is_later_volume
from .download import download_file, file_digests

log = logging.getLogger(__name__)

_ARCHIVE_NAME = re.compile(r"(.+)\.(tar\.gz|tar\.bz2|tar\.xz|tgz|zip|tar|7z|7z\.0*1)", re.IGNORECASE)


def fetch_source(source, dest: Path, cache: Path) -> dict:
    """Fill ``dest`` (existing, empty) and return the provenance record."""
    if isinstance(source, SyntheticSource):
        counts = synthetic.generate(dest, source)
        inputs = [{"generator": "medseg.sources.synthetic", "counts": counts}]
    elif isinstance(source, (UrlSource, ZenodoSource)):
        inputs = _fetch_remote(source, dest, cache)
    elif isinstance(source, LocalSource):
        inputs = _fetch_local(Path(source.path), dest, source.limits)
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown source {type(source).__name__}")
    return {
        "source": source.model_dump(mode="json"),
        "license": source.license,
        "inputs": inputs,
        **tree_summary(dest),
    }


def _fetch_remote(source: UrlSource | ZenodoSource, dest: Path, cache: Path) -> list[dict]:
    cache.mkdir(parents=True, exist_ok=True)
    inputs, paths = [], []
    for remote in source.remote_files():
        path = download_file(remote, cache, retries=source.retries, timeout_s=source.timeout_s)
        inputs.append({"name": remote.name, "url": remote.url, "bytes": path.stat().st_size, **file_digests(path)})
        paths.append(path)
    # Unpacked once all are here: a split 7z is read through its first volume, the others with it.
    for path in paths:
        if not is_later_volume(path):
            _unpack_or_copy(path, dest, source.limits)
    return inputs


def _fetch_local(path: Path, dest: Path, limits: ArchiveLimits) -> list[dict]:
    if not path.exists():
        raise DataError(display_path(path), "local source not found (check 'source.path' in params.yaml)")
    if path.is_dir():
        count = _copy_tree(path, dest, limits)
        return [{"path": display_path(path), "files": count}]
    _unpack_or_copy(path, dest, limits)
    return [{"path": display_path(path), "bytes": path.stat().st_size, **file_digests(path)}]


def _unpack_or_copy(path: Path, dest: Path, limits: ArchiveLimits) -> None:
    if is_archive(path):
        _unpack(path, dest, limits)
    else:
        shutil.copy2(path, dest / path.name)


def _unpack(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    # Each archive gets its own folder so two archives cannot overwrite each other.
    target = dest / _archive_stem(archive.name)
    if target.exists():
        raise DataError(display_path(archive), f"would unpack into {display_path(target)}, which is already filled")
    extract_archive(archive, target, limits)


def _archive_stem(name: str) -> str:
    match = _ARCHIVE_NAME.fullmatch(name)
    return match.group(1) if match else name


def _copy_tree(src: Path, dest: Path, limits: ArchiveLimits) -> int:
    """Copy regular files and unpack archives; return how many were copied or unpacked (a split 7z once).

    Links are refused so nothing outside ``src`` is pulled in. The later
    volumes of a split 7z are read with its first one, not copied.
    """
    count = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_symlink():
            raise DataError(display_path(path), "symbolic link in a local source; copy the real files instead")
        if path.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file() and not is_later_volume(path):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            if _archive_stem(path.name) != path.name and is_archive(path):
                _unpack(path, (dest / rel).parent, limits)
            else:
                shutil.copy2(path, dest / rel)
            count += 1
    return count


def tree_summary(root: Path) -> dict:
    """File count, bytes, count per extension and a digest over names and contents."""
    digest = hashlib.sha256()
    exts: Counter[str] = Counter()
    total = 0
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(file_digests(path)["sha256"].encode() + b"\n")
        exts[path.suffix.lower() or "(none)"] += 1
        total += path.stat().st_size
    return {"files": len(files), "bytes": total, "extensions": dict(sorted(exts.items())),
            "tree_sha256": digest.hexdigest()}
