"""``medseg.download`` against a real HTTP server on 127.0.0.1 that can misbehave on cue."""
from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from conftest import FileServer
from medseg.config import RemoteFile
from medseg.sources.download import DownloadError, download_file, file_digests

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, more than one download chunk


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "downloads"


def _fetch(remote: RemoteFile, dest: Path, retries: int = 2) -> Path:
    return download_file(remote, dest, retries=retries, timeout_s=5.0, progress=False)


def test_file_digests_match_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert file_digests(path) == {
        "md5": hashlib.md5(PAYLOAD).hexdigest(),
        "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
    }


@pytest.mark.parametrize("algos", [("md5",), ("sha256",), ("md5", "sha256")])
def test_download_verifies_and_places_file(server: FileServer, dest: Path, algos: tuple[str, ...]) -> None:
    checksums = {a: hashlib.new(a, PAYLOAD).hexdigest() for a in algos}
    remote = server.publish("data.zip", PAYLOAD, **checksums)

    path = download_file(remote, dest, retries=0, timeout_s=5.0, progress=True)

    assert path == dest / "data.zip"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.iterdir()) == ["data.zip"]  # no temporary file left


@pytest.mark.parametrize("algo", ["md5", "sha256"])
def test_wrong_checksum_fails_after_retries_and_leaves_nothing(server: FileServer, dest: Path, algo: str) -> None:
    wrong = "0" * (32 if algo == "md5" else 64)
    remote = server.publish("data.zip", PAYLOAD, **{algo: wrong})

    with pytest.raises(DownloadError) as err:
        _fetch(remote, dest, retries=1)

    message = str(err.value)
    assert remote.url in message
    assert f"expected {wrong}" in message
    assert f"got {hashlib.new(algo, PAYLOAD).hexdigest()}" in message
    assert err.value.path == dest / "data.zip"
    assert server.hits["data.zip"] == 2  # the first try and one retry, no more
    assert list(dest.iterdir()) == []


def test_truncated_transfer_fails_after_retries_and_leaves_nothing(server: FileServer, dest: Path) -> None:
    remote = server.publish("data.zip", PAYLOAD)
    server.faults["data.zip"] = ["truncate"] * 10

    with pytest.raises(DownloadError, match="gave up after 3 attempt"):
        _fetch(remote, dest, retries=2)

    assert server.hits["data.zip"] == 3
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("fault", ["503", "truncate"])
def test_transient_failure_is_retried(server: FileServer, dest: Path, fault: str) -> None:
    remote = server.publish("data.zip", PAYLOAD)
    server.faults["data.zip"] = [fault]

    path = _fetch(remote, dest)

    assert path.read_bytes() == PAYLOAD
    assert server.hits["data.zip"] == 2
    assert sorted(p.name for p in dest.iterdir()) == ["data.zip"]


def test_persistent_503_gives_up(server: FileServer, dest: Path) -> None:
    remote = server.publish("data.zip", PAYLOAD)
    server.faults["data.zip"] = ["503"] * 10

    with pytest.raises(DownloadError, match="HTTP 503"):
        _fetch(remote, dest, retries=1)
    assert server.hits["data.zip"] == 2
    assert list(dest.iterdir()) == []


def test_not_found_is_not_retried(server: FileServer, dest: Path) -> None:
    remote = RemoteFile(name="missing.zip", url=f"{server.base_url}/missing.zip", md5="0" * 32)

    with pytest.raises(DownloadError, match="HTTP 404"):
        _fetch(remote, dest, retries=3)
    assert server.hits["missing.zip"] == 1


def test_unreachable_server_fails_cleanly(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medseg.sources.download.RETRY_BACKOFF_S", 0.01)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    # Bind and close a socket to get a port on which nothing listens.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = RemoteFile(name="x.zip", url=f"http://127.0.0.1:{port}/x.zip", md5="0" * 32)

    with pytest.raises(DownloadError, match="gave up after 2 attempt"):
        _fetch(remote, dest, retries=1)
    assert list(dest.iterdir()) == []


def test_verified_file_already_present_is_not_downloaded(
    server: FileServer, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = server.publish("data.zip", PAYLOAD)
    dest.mkdir()
    (dest / "data.zip").write_bytes(PAYLOAD)

    with caplog.at_level("INFO", logger="medseg.sources.download"):
        path = _fetch(remote, dest)

    assert path.read_bytes() == PAYLOAD
    assert server.hits["data.zip"] == 0
    assert "already present" in caplog.text


def test_present_file_with_wrong_content_is_replaced(server: FileServer, dest: Path) -> None:
    remote = server.publish("data.zip", PAYLOAD)
    dest.mkdir()
    (dest / "data.zip").write_bytes(b"stale partial copy")

    path = _fetch(remote, dest)

    assert path.read_bytes() == PAYLOAD
    assert server.hits["data.zip"] == 1
