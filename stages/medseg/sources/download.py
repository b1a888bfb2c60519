"""Download remote files and verify them against their published checksums.

``download_file(remote, dest_dir)`` streams ``remote.url`` into a temporary
file in ``dest_dir``, hashing it on the way, and moves it to
``dest_dir/remote.name`` only once its md5 and/or sha256 match ``remote``.
A file already there with the right checksum is kept and not downloaded
again. Connection errors, timeouts, 5xx/429 answers, truncated bodies and
checksum mismatches are retried with a growing pause; other HTTP errors
(404, 403, ...) and the last failed attempt raise ``DownloadError``, which
names the file, the URL and, for a mismatch, both digests. Whatever fails,
nothing is left at the final path and no temporary file remains.

``file_digests(path)`` hashes a file on disk (also used for provenance).
"""
from __future__ import annotations

import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import IO, Any

import requests
from tqdm import tqdm

from medseg.config import RemoteFile
from medseg.io.atomic import atomic_file
from medseg.io.errors import DataError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
RETRY_BACKOFF_S = 1.0
"""Pause before the first retry; it doubles with each further attempt."""
MAX_BACKOFF_S = 30.0
_RETRY_STATUS = frozenset({408, 429})
# Compressed transfer would make Content-Length count other bytes than the
# ones hashed; the published checksum is of the file itself.
_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "medseg-fetch"}


class DownloadError(DataError):
    """A download failed or did not match its checksum; ``path`` is the intended file."""


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not (network, overload, damaged bytes)."""


def file_digests(path: Path) -> dict[str, str]:
    """Return ``{"md5": ..., "sha256": ...}`` of the file at ``path``, read in chunks."""
    hashers = _new_hashers()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def download_file(
    remote: RemoteFile,
    dest_dir: Path,
    *,
    retries: int = 3,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``remote`` to ``dest_dir/remote.name`` and verify it; return that path.

    ``retries`` is the number of attempts after the first; ``timeout_s`` bounds
    each connect and each read, not the whole transfer.

    Raises:
        DownloadError: the server refused the file, every attempt failed, or
            the checksum never matched.
    """
    final = Path(dest_dir) / remote.name
    if _already_verified(remote, final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    attempt = 1
    while True:
        try:
            _fetch_once(remote, final, timeout_s, progress)
            log.info("downloaded and verified %s", final)
            return final
        except _Retryable as exc:
            if attempt > retries:
                raise DownloadError(final, f"{exc} (gave up after {attempt} attempt(s))") from exc
            pause = min(RETRY_BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S)
            log.warning("%s: attempt %d of %d failed: %s; retrying in %.1f s", final, attempt, retries + 1, exc, pause)
            time.sleep(pause)
            attempt += 1


def _already_verified(remote: RemoteFile, final: Path) -> bool:
    if not final.is_file():
        return False
    problem = _mismatch(remote, file_digests(final))
    if problem is None:
        log.info("%s already present with the expected checksum; not downloading", final)
        return True
    # Removed rather than left in place so that a failed re-download cannot
    # leave an unverified file where later stages look for it.
    log.warning("%s exists but %s; removing it and downloading again", final, problem)
    final.unlink()
    return False


def _fetch_once(remote: RemoteFile, final: Path, timeout_s: float, progress: bool) -> None:
    """Make one attempt; the file appears at ``final`` only if its checksum matches."""
    try:
        with requests.get(remote.url, stream=True, timeout=timeout_s, headers=_HEADERS) as resp:
            _check_status(resp, remote, final)
            with atomic_file(final, "wb") as fh:
                digests = _stream_to(resp, fh, remote.name, progress)
                problem = _mismatch(remote, digests)
                if problem is not None:
                    raise _Retryable(f"{remote.url}: {problem}")
    except requests.exceptions.ChunkedEncodingError as exc:
        # How urllib3 reports a body cut short on most versions (IncompleteRead).
        raise _Retryable(f"{remote.url}: transfer cut short ({exc})") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retryable(f"{remote.url}: {exc}") from exc
    except requests.RequestException as exc:
        raise DownloadError(final, f"cannot download {remote.url}: {exc}") from exc


def _check_status(resp: requests.Response, remote: RemoteFile, final: Path) -> None:
    if resp.ok:
        return
    problem = f"{remote.url}: HTTP {resp.status_code} {resp.reason}"
    if resp.status_code >= 500 or resp.status_code in _RETRY_STATUS:
        raise _Retryable(problem)
    raise DownloadError(final, problem)


def _stream_to(resp: requests.Response, fh: IO[bytes], label: str, progress: bool) -> dict[str, str]:
    """Copy the body into ``fh`` and return its digests; a short body is an error."""
    expected = _declared_length(resp)
    hashers = _new_hashers()
    received = 0
    with tqdm(
        total=expected, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, disable=not progress
    ) as bar:
        for chunk in resp.iter_content(CHUNK_BYTES):
            fh.write(chunk)
            for h in hashers.values():
                h.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    # Depending on the urllib3 version and how the connection ended, a body
    # cut short may end iteration quietly instead of raising.
    if expected is not None and received != expected:
        raise _Retryable(f"{resp.url}: transfer cut short, received {received} of {expected} bytes")
    return {name: h.hexdigest() for name, h in hashers.items()}


def _declared_length(resp: requests.Response) -> int | None:
    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None  # the length counts encoded bytes, not the ones we receive
    try:
        return int(resp.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _mismatch(remote: RemoteFile, digests: dict[str, str]) -> str | None:
    """Describe the first checksum of ``remote`` that ``digests`` contradicts, if any."""
    for algo in ("md5", "sha256"):
        expected = getattr(remote, algo)
        if expected is not None and digests[algo] != expected:
            return f"{algo} mismatch: expected {expected}, got {digests[algo]}"
    return None


def _new_hashers() -> dict[str, Any]:
    # md5 checks integrity against Zenodo's published sums, not authenticity.
    return {"md5": hashlib.md5(usedforsecurity=False), "sha256": hashlib.sha256()}
