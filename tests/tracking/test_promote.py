"""Gated promotion: the alias moves to a better model only, never across test splits; the summary says why.

``decide`` is checked on its own; then against a real ``mlflow server`` on
127.0.0.1 (sqlite backend in a temporary folder), with versions registered
as training registers them (``record.log_checkpoint`` of a tiny checkpoint):
a first model is promoted, a worse one is not, a better one is, one tested
on another split is refused.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from medseg.config import MlflowConfig, ModelConfig
from medseg.config.tracking import PromotionConfig
from medseg.data.rounds import Round
from medseg.model.checkpoint import save_checkpoint
from medseg.model.factory import build_model
from medseg.tracking import record
from medseg.tracking.browser import serve_ui
from medseg.tracking.promote import Score, candidate_score, decide, settle
from medseg.tracking.registry import registered_name
from medseg.tracking.run import Tracker
from medseg.tracking.store import COMMIT_TAG

CFG = PromotionConfig(metric="mean_fg_dice", margin=0.01, alias="champion")


# --------------------------------------------------------------------------- the rule
def test_decide_promotes_a_first_model_and_only_a_clear_win_on_the_same_split() -> None:
    champion = Score("1", 0.70, "s1")
    assert decide(Score("2", 0.50, "s1"), None, 0.01).promote
    assert decide(Score("2", 0.72, "s1"), champion, 0.01).promote
    assert not decide(Score("2", 0.705, "s1"), champion, 0.01).promote  # within the margin
    assert not decide(Score("2", 0.60, "s1"), champion, 0.01).promote
    refused = decide(Score("2", 0.99, "s2"), champion, 0.01)
    assert not refused.promote and "different test splits" in refused.why
    assert not decide(Score("2", math.nan, "s1"), champion, 0.01).promote
    assert not decide(Score("1", 0.70, "s1"), champion, 0.0).promote  # already the champion


def test_candidate_score_reads_eval_json_and_digests_the_test_split(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics/datasets/toy").mkdir(parents=True)
    (tmp_path / "metrics/datasets/toy/eval.json").write_text('{"mean_fg_dice": 0.625, "n_test": 2}')
    (tmp_path / "data/split").mkdir(parents=True)
    split = pd.DataFrame({"id": ["a", "b", "c", "d"], "source_id": ["a", "b", "c", "d"], "group": list("abcd"),
                          "image_class": [""] * 4, "kind": ["original"] * 4,
                          "split": ["train", "valid", "test", "test"], "fold": [-1] * 4})
    split.to_csv(tmp_path / "data/split/toy.csv", index=False)
    score = candidate_score("toy", "3", CFG)
    assert (score.version, score.value) == ("3", 0.625)
    moved = split.assign(split=["test", "valid", "train", "test"])  # same size, other images tested
    assert record.split_digest(moved) != score.split
    assert record.split_digest(split.assign(split=["valid", "train", "test", "test"])) == score.split
    with pytest.raises(Exception, match="not a top-level number"):
        candidate_score("toy", "3", PromotionConfig(metric="dice"))


# --------------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    with serve_ui(f"sqlite:///{root / 'mlflow.db'}", root / "server.log", artifacts=root / "artifacts") as uri:
        yield uri


@pytest.fixture
def client(server: str, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for var in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(var, raising=False)
    return MlflowClient(tracking_uri=server)


def trained_version(tmp_path: Path, dataset: str, seed: int, dice: float, split: str) -> Score:
    """A run as train and evaluate leave it (a tiny model registered, test score and split), as a candidate."""
    config = ModelConfig(base_filters=4, depth=2, stem_stride=2)
    torch.manual_seed(seed)
    checkpoint = tmp_path / f"seed{seed}" / Round().checkpoint
    checkpoint.parent.mkdir()
    model = build_model(config, 1, 2)
    save_checkpoint(checkpoint, model.state_dict(), config, ["background", "lesion"], 1, (32, 32), {})
    key = {COMMIT_TAG: "c0ffee", "dataset": dataset, "data_hash": f"d{seed}", "params_hash": "p"}
    with Tracker.start(MlflowConfig(experiment="promote-test", required=True), dataset, key, tmp_path) as tracker:
        record.log_checkpoint(tracker, checkpoint)
        tracker.log_metrics({f"test.{CFG.metric}": dice})
        tracker.set_tags({record.SPLIT_TAG: split})
    from mlflow import MlflowClient

    [version] = MlflowClient().search_model_versions(f"name = '{registered_name(dataset)}' and "
                                                     f"run_id = '{tracker.run_id}'")
    assert version.tags["data_hash"] == f"d{seed}"  # the version names its run key
    return Score(version.version, dice, split)


def champion_version(client, dataset: str) -> str:
    return client.get_model_version_by_alias(registered_name(dataset), CFG.alias).version


def test_first_better_worse_and_other_split_against_a_server(client, tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    name = registered_name("toy")

    first = trained_version(tmp_path, "toy", 1, 0.60, "split-a")
    assert settle(client, name, first, CFG)[0].promote
    assert champion_version(client, "toy") == first.version

    worse = trained_version(tmp_path, "toy", 2, 0.605, "split-a")  # better, but within the margin
    assert not settle(client, name, worse, CFG)[0].promote
    assert champion_version(client, "toy") == first.version
    text = summary.read_text()
    assert "not promoted" in text and "0.6050" in text and "0.6000" in text  # both numbers

    better = trained_version(tmp_path, "toy", 3, 0.70, "split-a")
    assert settle(client, name, better, CFG)[0].promote
    assert champion_version(client, "toy") == better.version

    elsewhere = trained_version(tmp_path, "toy", 4, 0.95, "split-b")
    decision, _ = settle(client, name, elsewhere, CFG)
    assert not decision.promote and "different test splits" in decision.why
    assert champion_version(client, "toy") == better.version
    assert summary.read_text().count("### Promotion of `medseg-toy`") == 4
