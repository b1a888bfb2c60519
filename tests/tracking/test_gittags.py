"""DVC's model registry in git tags: ``dvc artifacts get`` by version and by stage fetches the promoted model.

A real DVC project in a temporary folder, with ``dvc.yaml`` declaring the
model folder of its train stage as an artifact (as the pipeline's does), a
directory as its default DVC remote and each training result committed and
pushed. Promotion outcomes (what ``stages/promote.py --record`` keeps) are
turned into tags by ``promote.tag_outcomes``, as ``.ci/retrain.sh`` does after
committing; then ``dvc artifacts get REPO toy --rev v<N>.0.0`` and ``--stage
champion`` run as a user would, with the project's cache deleted, so the
checkpoint can only come from the remote.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import run
from medseg.io.errors import StageError
from medseg.model.checkpoint import load_checkpoint
from medseg.tracking import gittags
from medseg.tracking.promote import Outcome, read_record, tag_outcomes, write_record

NAME = "toy"
TRAIN = f"""\
import sys
import torch
from medseg.config import ModelConfig
from medseg.model.checkpoint import save_checkpoint
from medseg.model.factory import build_model

config = ModelConfig(base_filters=4, depth=2, stem_stride=2)
torch.manual_seed(int(sys.argv[1]))
save_checkpoint("models/{NAME}/model.pt", build_model(config, 1, 2).state_dict(), config,
                ["background", "lesion"], 1, (32, 32), {{"seed": int(sys.argv[1])}})
"""
DVC_YAML = f"""\
stages:
  train:
    cmd: python train.py ${{seed}}
    deps: [train.py]
    params: [seed]
    outs: [models/{NAME}]
artifacts:
  {NAME}:
    path: models/{NAME}
    type: model
    desc: a tiny U-Net
    labels: [segmentation]
"""


def test_names_are_gtos() -> None:
    assert gittags.version_tag("us-liver-mini", "3") == "us-liver-mini@v3.0.0"
    assert gittags.stage_tag("synthetic", "champion", 2) == "synthetic#champion#2"
    with pytest.raises(StageError, match="whole number"):
        gittags.version_tag("synthetic", "3a")
    with pytest.raises(StageError, match="cannot name"):
        gittags.stage_tag("synthetic", "champion_", 1)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "project"
    (repo / "models").mkdir(parents=True)
    (repo / "train.py").write_text(TRAIN)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("seed: 1\n")
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-remote")], repo)
    for var, value in {"GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost"}.items():
        monkeypatch.setenv(var, value)
    return repo


def train_and_commit(repo: Path, seed: int) -> str:
    """``dvc repro`` with another seed, push the cache to the remote, commit; the commit."""
    (repo / "params.yaml").write_text(f"seed: {seed}\n")
    run(["dvc", "repro", "-q"], repo)
    run(["dvc", "push", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", f"model of seed {seed}"], repo)
    return run(["git", "rev-parse", "HEAD"], repo).strip()


def fetched_seed(repo: Path, out: Path, *selector: str) -> int:
    """``dvc artifacts get`` of the model, by ``--rev`` or ``--stage``; the seed its checkpoint was made with."""
    run(["dvc", "artifacts", "get", str(repo), NAME, *selector, "-o", str(out)], repo.parent)
    return load_checkpoint(out / "model.pt").info["seed"]


def test_dvc_artifacts_get_fetches_each_version_and_the_champion_from_the_remote(project: Path, tmp_path: Path,
                                                                                  monkeypatch) -> None:
    def promoted(step: int, version: str, holder: str) -> list[str]:
        # Separate retraining runs tag at different times; DVC serves the newest stage tag by its time.
        monkeypatch.setenv("GIT_COMMITTER_DATE", f"2026-01-0{step}T03:00:00Z")
        record = tmp_path / f"record{step}.json"
        write_record(record, [Outcome(NAME, version, holder, "champion")])
        return tag_outcomes(project, read_record(record))

    first = train_and_commit(project, seed=1)
    assert promoted(1, "1", "1") == ["toy@v1.0.0", "toy#champion#1"]  # a first model takes the stage
    second = train_and_commit(project, seed=2)
    assert promoted(2, "2", "2") == ["toy@v2.0.0", "toy#champion#2"]  # a better one
    third = train_and_commit(project, seed=3)
    assert promoted(3, "3", "2") == ["toy@v3.0.0"]  # a worse one: registered, the stage stays
    assert promoted(4, "3", "2") == []  # asked again: nothing to add
    assert {tag: gittags.tag_commit(project, tag) for tag in ("toy@v1.0.0", "toy@v2.0.0", "toy@v3.0.0",
                                                              "toy#champion#2")} == {
        "toy@v1.0.0": first, "toy@v2.0.0": second, "toy@v3.0.0": third, "toy#champion#2": second}
    assert run(["git", "cat-file", "-t", "toy#champion#2"], project).strip() == "tag"  # annotated: GTO skips others

    # Only the remote holds the checkpoints now.
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "models" / NAME)
    assert [fetched_seed(project, tmp_path / f"v{n}", "--rev", f"v{n}.0.0") for n in (1, 2, 3)] == [1, 2, 3]
    assert fetched_seed(project, tmp_path / "champion", "--stage", "champion") == 2
    # CI keeps its remote out of the repository (.dvc/config.local): the user names it instead.
    assert fetched_seed(project, tmp_path / "named", "--stage", "champion", "--remote", "ci", "--remote-config",
                        f"url={tmp_path / 'dvc-remote'}") == 2

    # Rollback: the alias went back to version 1 in MLflow; the next tagging follows it.
    assert promoted(5, "3", "1") == ["toy#champion#3"]
    assert gittags.tag_commit(project, "toy#champion#3") == first
    assert fetched_seed(project, tmp_path / "rolled-back", "--stage", "champion") == 1


def test_a_holder_without_a_version_tag_gets_no_stage_tag(project: Path) -> None:
    train_and_commit(project, seed=1)
    assert gittags.mirror(project, NAME, "2", "1", "champion") == ["toy@v2.0.0"]
    assert gittags.stage_tags(project, NAME, "champion") == {}


def test_a_version_tag_never_moves(project: Path, caplog) -> None:
    first = train_and_commit(project, seed=1)
    assert gittags.mirror(project, NAME, "1", None, "champion") == ["toy@v1.0.0"]
    train_and_commit(project, seed=2)  # a store that forgot version 1 calls this result version 1 too
    assert gittags.mirror(project, NAME, "1", None, "champion") == []
    assert gittags.tag_commit(project, "toy@v1.0.0") == first
    assert "counts versions anew" in caplog.text


def test_a_broken_record_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "record.json").write_text('[{"dataset": "toy"}]')
    with pytest.raises(StageError, match="record.json: not a promotion record"):
        read_record(tmp_path / "record.json")

