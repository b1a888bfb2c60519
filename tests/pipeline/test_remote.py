"""A DVC remote round trip: what one machine pushes, a fresh clone pulls and finds up to date.

One clone per module, on a tiny config: `dvc repro`, `dvc remote add -d` a
local folder, `dvc push`, commit; then `git clone` to a new folder and
`dvc pull` there. The new clone must hold the same files, `dvc status` must
find nothing to do and `dvc repro` must run no stage. A local folder stands
in for S3/GCS/SSH: the remote type changes the transport, not what DVC
stores or checks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import clone_work_tree, ran_stages, run, shrink

pytestmark = pytest.mark.slow

DS = "synthetic"
# Output folders of dvc.yaml, cached by DVC or committed to git.
OUTPUT_DIRS = ("data/raw", "data/converted", "data/augmented", "data/split", "models", "metrics")


def tiny(data: dict) -> None:
    shrink(data, copies=1, epochs=1, previews=1, overlays=1, bootstrap=20)


def digests(repo: Path) -> dict[str, str]:
    """sha256 of every file under the output folders, by path relative to ``repo``."""
    return {str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in OUTPUT_DIRS for path in sorted((repo / folder).rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def trip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("remote")
    source = clone_work_tree(root / "source", tiny)
    run(["dvc", "repro"], source)
    remote = root / "storage"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], source)
    run(["dvc", "push"], source)
    run(["git", "add", "-A"], source)
    run(["git", "commit", "-qm", "results, remote"], source)
    fresh = root / "fresh"
    run(["git", "clone", "-q", str(source), str(fresh)], root)
    assert not (fresh / "models" / DS).exists()  # git alone does not carry the cached outputs
    pull = run(["dvc", "pull"], fresh)
    return {"source": source, "fresh": fresh, "remote": remote, "pull": pull}


def test_push_stores_every_cached_output_in_the_remote(trip) -> None:
    assert "Cache and remote 'local' are in sync" in run(["dvc", "status", "--cloud"], trip["source"])
    assert any((trip["remote"] / "files" / "md5").rglob("*"))
    # The fresh clone had an empty cache: all it holds came from the remote.
    assert "Cache and remote 'local' are in sync" in run(["dvc", "status", "--cloud"], trip["fresh"])


def test_pulled_clone_has_the_same_files(trip) -> None:
    pulled = digests(trip["fresh"])
    assert f"models/{DS}/model.pt" in pulled and f"metrics/datasets/{DS}/eval.json" in pulled
    assert pulled == digests(trip["source"])


def test_pulled_clone_is_up_to_date(trip) -> None:
    assert run(["dvc", "status"], trip["fresh"]).strip() == "Data and pipelines are up to date."
    assert run(["git", "status", "--porcelain"], trip["fresh"]) == ""


def test_pulled_clone_reproduces_nothing(trip) -> None:
    out = run(["dvc", "repro"], trip["fresh"])
    assert ran_stages(out) == set()
    assert f"Stage 'train@{DS}' didn't change, skipping" in out
    assert run(["git", "status", "--porcelain"], trip["fresh"]) == ""  # nor rewrites dvc.lock
