"""The track stage: MLflow holds each result once per (commit, dataset, data hash, params hash).

First the sync itself (``medseg.tracking.sync.sync_run``) against a sqlite store.
Then, marked slow, the stage as DVC runs it: real DVC and real MLflow in one
temporary clone with its own store (``mlflow.required`` is on there, so a
stage that cannot reach the store fails loudly). Those tests run in order
and build on each other: a first repro, an unchanged repro, a commit of the
results, a run-cache restore, and experiments that run outside the work tree
(``--temp`` and the queue).
"""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import clone_work_tree, edit_params, ran_stages, run, shrink
from medseg.config import MlflowConfig
from medseg.data import results
from medseg.data.rounds import Round
from medseg.io import paths
from medseg.tracking.record import log_history
from medseg.tracking.run import Tracker
from medseg.tracking.store import COMMIT_TAG, TrackingError
from medseg.tracking.sync import run_key, sync_run
from medseg.tracking.values import numeric_metrics

slow = pytest.mark.slow


# --------------------------------------------------------------------------- the sync
CFG = MlflowConfig(experiment="medseg-sync-test")


@pytest.fixture(scope="module")
def sync_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One store for these tests: creating it runs MLflow's migrations, which take seconds.
    return f"sqlite:///{tmp_path_factory.mktemp('sync-store')}/mlflow.db"


@pytest.fixture
def client(sync_store: str, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sync_store)
    for var in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(var, raising=False)
    return MlflowClient(tracking_uri=sync_store)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A clean git work tree with one commit."""
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], cwd=tmp_path,
                       check=True, capture_output=True)
    return tmp_path


def test_sync_finds_the_run_of_the_same_commit_even_when_the_tree_was_clean(client, repo: Path) -> None:
    with Tracker.start(CFG, "busi", run_key(repo, "busi", "d1", "p1"), repo) as trained:
        pass
    (repo / "eval.json").write_text("{}")  # a stage run always leaves the tree dirty
    filled = []
    assert sync_run(CFG, repo, "busi", run_key(repo, "busi", "d1", "p1"), {}, filled.append) == trained.run_id
    assert filled == []
    assert client.get_run(trained.run_id).data.tags["git.dirty"] == "false"


def test_sync_creates_one_run_when_no_finished_run_matches(client, repo: Path) -> None:
    key = run_key(repo, "busi", "d2", "p2")
    with pytest.raises(RuntimeError):
        with Tracker.start(CFG, "busi", key, repo):
            raise RuntimeError("training died")  # a FAILED run may lack the results
    with Tracker.start(CFG, "busi", {**key, "params_hash": "other"}, repo):
        pass

    created = sync_run(CFG, repo, "busi", key, {"sync.source_run": "abc"},
                       lambda tracker: tracker.log_metrics({"test.dice": 0.5}))
    synced = client.get_run(created)
    assert synced.info.status == "FINISHED" and synced.data.metrics == {"test.dice": 0.5}
    assert {**key, "sync.source_run": "abc"}.items() <= synced.data.tags.items()
    filled = []
    assert sync_run(CFG, repo, "busi", key, {}, filled.append) == created
    assert filled == []


def test_sync_without_a_store_warns_or_fails_as_configured(repo: Path, monkeypatch, caplog) -> None:
    with socket.socket() as sock:  # bound then closed: connecting is refused at once
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    caplog.set_level(logging.WARNING)
    key, filled = run_key(repo, "busi", "d", "p"), []
    assert sync_run(CFG, repo, "busi", key, {}, filled.append) is None
    assert filled == []
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING][0].startswith(
        f"MLflow tracking at {uri} is unreachable")
    with pytest.raises(TrackingError, match="mlflow.required is true"):
        sync_run(MlflowConfig(experiment=CFG.experiment, required=True), repo, "busi", key, {}, filled.append)


class Recorder:
    """Stands in for a Tracker: keeps what was logged."""

    def __init__(self) -> None:
        self.metrics: list[tuple[dict[str, float], int | None]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((dict(metrics), step))


def test_history_is_logged_per_round_at_each_epoch(tmp_path: Path) -> None:
    crossval = tmp_path / "crossval.csv"
    crossval.write_text("fold,epoch,val_pooled_dice,val_pooled_dice_benign\n0,1,0.5,0.4\n0,2,0.6,\n1,1,0.7,0.3\n")
    recorder = Recorder()
    log_history(recorder, crossval)
    assert recorder.metrics == [({"fold0.val_pooled_dice": 0.5, "fold0.val_pooled_dice_benign": 0.4}, 1),
                                ({"fold0.val_pooled_dice": 0.6}, 2),
                                ({"fold1.val_pooled_dice": 0.7, "fold1.val_pooled_dice_benign": 0.3}, 1)]
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("fold,epoch,val_pooled_dice\n-1,1,0.5\n-1,2,0.6\n")
    recorder = Recorder()
    log_history(recorder, fixed)
    assert recorder.metrics == [({"val_pooled_dice": 0.5}, 1), ({"val_pooled_dice": 0.6}, 2)]


def test_numeric_metrics_keeps_the_numbers_evaluate_logs() -> None:
    metrics = {"dice": {"liver": {"mean": 0.9, "n": 3}, "benign": {"mean": None}}, "classes": ["a"], "cv": True}
    assert numeric_metrics(metrics, "test") == {"test.dice.liver.mean": 0.9, "test.dice.liver.n": 3.0}


# --------------------------------------------------------------------------- the stage under DVC
DS = "synthetic"
EXPERIMENT = "medseg"
KEY_TAGS = (COMMIT_TAG, "dataset", "data_hash", "params_hash")
RESTORED = f"Stage 'train@{DS}' is cached - skipping run, checking out outputs"
QUEUE_TIMEOUT_S = 180


def tiny(data: dict) -> None:
    shrink(data, copies=1, epochs=1, previews=1, overlays=1, bootstrap=20)
    data["train"]["lr"] = 0.002
    data["mlflow"].update(experiment=EXPERIMENT, tracking_uri=None, required=True)


def set_lr(lr: float):
    return lambda data: data["train"].update(lr=lr)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clone_work_tree(tmp_path_factory.mktemp("track"), tiny)


@pytest.fixture(scope="module")
def store(clone: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")


# --------------------------------------------------------------------------- reading the store back
def finished_runs(store) -> list:
    experiment = store.get_experiment_by_name(EXPERIMENT)
    return [] if experiment is None else store.search_runs([experiment.experiment_id],
                                                           "attributes.status = 'FINISHED'")


def key_of(run) -> tuple[str, ...]:
    return tuple(run.data.tags[name] for name in KEY_TAGS)


def assert_one_run_per_key(store) -> None:
    counts = Counter(key_of(r) for r in finished_runs(store))
    assert counts and set(counts.values()) == {1}, counts


def run_info(clone: Path) -> dict:
    return json.loads((clone / paths.model_dir(DS) / results.RUN_INFO).read_text())


def head(clone: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], clone).strip()


def current_key(clone: Path) -> tuple[str, ...]:
    info = run_info(clone)
    return head(clone), DS, info["data_hash"], info["params_hash"]


def commit(clone: Path, message: str) -> None:
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-qm", message], clone)


def scores(run) -> dict[str, float]:
    """The run's ``test.*`` metrics, as evaluate logs them."""
    return {name: value for name, value in run.data.metrics.items() if name.startswith("test.")}


@slow
def test_first_repro_records_the_training_run_only(clone: Path, store) -> None:
    out = run(["dvc", "repro"], clone)
    assert {f"{stage}@{DS}" for stage in ("train", "evaluate", "track")} <= ran_stages(out)
    runs = finished_runs(store)
    assert len(runs) == 1
    trained = runs[0]
    assert trained.info.run_id == run_info(clone)["run_id"]
    assert key_of(trained) == current_key(clone)
    assert trained.data.tags["dvc.stage"] == f"train@{DS}"
    assert "test.mean_fg_dice" in trained.data.metrics  # evaluate logged into it before track looked
    assert "nothing to sync" in out


@slow
def test_unchanged_repro_adds_no_run(clone: Path, store) -> None:
    out = run(["dvc", "repro"], clone)
    assert ran_stages(out) == set()
    assert len(finished_runs(store)) == 1


@slow
def test_committed_results_get_one_run_of_their_own(clone: Path, store) -> None:
    trained = store.get_run(run_info(clone)["run_id"])
    commit(clone, "results")
    assert ran_stages(run(["dvc", "repro"], clone)) == set()  # nothing changed, nothing runs
    assert len(finished_runs(store)) == 1
    run(["dvc", "repro", "-f", "-s", f"track@{DS}"], clone)  # record the results under the new commit

    synced = [r for r in finished_runs(store) if r.info.run_id != trained.info.run_id]
    assert len(synced) == 1
    sync = synced[0]
    assert key_of(sync) == current_key(clone) and key_of(sync)[1:] == key_of(trained)[1:]
    tags = sync.data.tags
    assert (tags["dvc.stage"], tags["git.dirty"]) == (f"track@{DS}", "false")
    assert tags["sync.source_run"] == trained.info.run_id
    assert sync.info.run_name == DS
    # The sync logs what train and evaluate logged, read back from the files: the same columns.
    assert sync.data.params == trained.data.params
    assert set(sync.data.metrics) == set(trained.data.metrics)
    assert scores(sync) and scores(sync) == pytest.approx(scores(trained), nan_ok=True)
    history, trained_history = (store.get_metric_history(r.info.run_id, "val_pooled_dice") for r in (sync, trained))
    assert [m.step for m in history] == [m.step for m in trained_history] == [1]  # step = epoch
    # train_history.csv keeps 6 significant digits.
    assert [m.value for m in history] == pytest.approx([m.value for m in trained_history], rel=1e-5, nan_ok=True)
    artifacts = {a.path for folder in ("model", "evaluation") for a in store.list_artifacts(sync.info.run_id, folder)}
    assert {f"model/{Round().checkpoint}", f"evaluation/{results.EVAL_METRICS}"} <= artifacts
    trained_artifacts = {a.path for folder in ("model", "progress", "evaluation")
                         for a in store.list_artifacts(trained.info.run_id, folder)}
    assert {a.path for folder in ("model", "progress", "evaluation")
            for a in store.list_artifacts(sync.info.run_id, folder)} == trained_artifacts

    run(["dvc", "repro", "-f", "-s", f"track@{DS}"], clone)  # idempotent
    assert len(finished_runs(store)) == 2


@slow
def test_run_cache_restore_is_recorded_once(clone: Path, store) -> None:
    original = run_info(clone)
    before = len(finished_runs(store))
    edit_params(clone, set_lr(0.003))
    assert f"train@{DS}" in ran_stages(run(["dvc", "repro"], clone))
    # Committed, so that the restored lr 0.002 result meets a commit with no
    # run for it; in the commit before, its training run would still match.
    commit(clone, "lr 0.003")

    edit_params(clone, set_lr(0.002))
    out = run(["dvc", "repro"], clone)
    assert RESTORED in out and f"train@{DS}" not in ran_stages(out)
    assert run_info(clone) == original  # the restored model still names the run it came from
    runs = finished_runs(store)
    assert len(runs) == before + 2  # the lr 0.003 training run, and one sync for the restored result
    matching = [r for r in runs if key_of(r) == current_key(clone)]
    assert len(matching) == 1
    assert matching[0].data.tags["sync.source_run"] == original["run_id"]
    assert_one_run_per_key(store)


# --------------------------------------------------------------------------- outside the work tree
@slow
def test_temp_experiment_logs_into_the_repository_store(clone: Path, store) -> None:
    # lr 0.003 is in the run-cache: train is restored inside the temporary
    # copy, evaluate resumes that model's run and track syncs the result.
    before = {r.info.run_id for r in finished_runs(store)}
    out = run(["dvc", "exp", "run", "--temp", "-n", "temp-exp", "-S", "train.lr=0.003"], clone)
    assert RESTORED in out
    new = [r for r in finished_runs(store) if r.info.run_id not in before]
    assert len(new) == 1
    tags = new[0].data.tags
    assert (tags["dvc.exp_name"], tags["dvc.stage"]) == ("temp-exp", f"track@{DS}")
    assert tags[COMMIT_TAG] == head(clone)  # the experiment's baseline
    assert new[0].info.artifact_uri.startswith((clone / "mlruns").as_uri())
    assert_one_run_per_key(store)


@slow
def test_queued_experiment_logs_into_the_repository_store(clone: Path, store) -> None:
    before = {r.info.run_id for r in finished_runs(store)}
    run(["dvc", "exp", "run", "--queue", "-n", "queued-exp", "-S", "train.lr=0.004"], clone)
    run(["dvc", "queue", "start", "-j", "1"], clone)
    status = wait_for_queue(clone, "queued-exp")
    assert status == "Success", run(["dvc", "queue", "logs", "queued-exp"], clone)

    new = [r for r in finished_runs(store) if r.info.run_id not in before]
    assert len(new) == 1  # the training run; track found it
    tags = new[0].data.tags
    assert (tags["dvc.exp_name"], tags["dvc.stage"]) == ("queued-exp", f"train@{DS}")
    assert "test.mean_fg_dice" in new[0].data.metrics  # evaluate, also in the temporary copy, found it
    assert new[0].info.artifact_uri.startswith((clone / "mlruns").as_uri())
    assert_one_run_per_key(store)


def wait_for_queue(clone: Path, name: str) -> str:
    """The final status (Success, Failed, ...) of queued experiment ``name``."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    status = "Queued"
    while status in ("Queued", "Running"):
        if time.monotonic() > deadline:
            run(["dvc", "queue", "kill", name], clone)
            pytest.fail(f"queued experiment {name} still {status} after {QUEUE_TIMEOUT_S} s")
        time.sleep(2)
        rows = [line.split() for line in run(["dvc", "queue", "status"], clone).splitlines()]
        status = next((row[-1] for row in rows if name in row), "Queued")
    return status
