"""Tracking against a real MLflow sqlite store, read back with ``MlflowClient``.

One store serves the whole module: creating it runs MLflow's schema
migrations, which take seconds.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from medseg.config import MlflowConfig
from medseg.tracking.browser import free_port
from medseg.tracking.run import Tracker
from medseg.tracking.store import (
    HOST_TAG,
    PID_TAG,
    TrackingError,
    dvc_context,
    ensure_experiment,
    find_repo_root,
    git_state,
    resolve_tracking_uri,
)
from medseg.tracking.ui import VIEW_KEY, VIEW_TAG_PREFIX, runs_page
from medseg.tracking.values import MAX_PARAM_VALUE, MAX_TAG_VALUE, flatten

CFG = MlflowConfig(experiment="medseg-test")
DVC_VARS = ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")


def _git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false"]
    done = subprocess.run(["git", *identity, *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git work tree with one commit and no changes."""
    path = tmp_path_factory.mktemp("repo")
    _git(path, "init", "-q")
    (path / "params.yaml").write_text("train: {}\n")
    _git(path, "add", "params.yaml")
    _git(path, "commit", "-q", "-m", "init")
    return path


@pytest.fixture
def client(store: Path, monkeypatch: pytest.MonkeyPatch):
    """An MLflow client on the shared store, which ``MLFLOW_TRACKING_URI`` points the tracker at."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{store}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for var in DVC_VARS:
        monkeypatch.delenv(var, raising=False)
    return MlflowClient(tracking_uri=uri)


def _tracking_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("medseg.tracking") and r.levelno == logging.WARNING]


# --------------------------------------------------------------------------- a full run
def test_run_is_readable_back(client, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_STAGE", "train@busi")
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    params = {"train": {"lr": 0.002, "model": {"depth": 4}}, "augment": {"size": (256, 256)}, "note": "x" * 9000}

    with Tracker.start(CFG, "train-busi", {"dataset": "busi"}, repo) as tracker:
        tracker.log_params(params)
        for epoch, loss in enumerate([0.9, 0.5, 0.4]):
            tracker.log_metrics({"train.loss": loss, "valid.dice": 1 - loss}, step=epoch)
        tracker.log_artifact(checkpoint, "model")
        tracker.log_dict({"classes": ["background", "lesion"]}, "classes.json")

    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train-busi"
    assert client.get_experiment(run.info.experiment_id).name == CFG.experiment
    assert run.data.params["train.model.depth"] == "4"
    assert run.data.params["augment.size"] == "[256, 256]"
    assert len(run.data.params["note"]) == MAX_PARAM_VALUE
    history = client.get_metric_history(tracker.run_id, "train.loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.4)]
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == _git(repo, "rev-parse", "HEAD")
    assert tags["git.dirty"] == "false"
    assert tags["dataset"] == "busi"
    assert (tags["dvc.stage"], tags["dvc.exp_name"]) == ("train@busi", "lucky-lark")
    assert Path(client.download_artifacts(tracker.run_id, "model/best.pt", str(tmp_path))).read_bytes() == b"weights"
    classes = json.loads(Path(client.download_artifacts(tracker.run_id, "classes.json", str(tmp_path))).read_text())
    assert classes == {"classes": ["background", "lesion"]}


def test_artifacts_are_stored_beside_the_sqlite_file(client, store: Path, repo: Path) -> None:
    with Tracker.start(CFG, "where", {}, repo) as tracker:
        pass
    assert client.get_run(tracker.run_id).info.artifact_uri.startswith((store / "mlruns").as_uri())


def test_resume_logs_into_the_same_run(client, repo: Path) -> None:
    with Tracker.start(CFG, "train", {}, repo) as tracker:
        tracker.log_metrics({"valid.dice": 0.7}, step=3)

    with Tracker.resume(CFG, tracker.run_id, repo) as resumed:
        resumed.log_metrics({"test.dice": 0.8})

    assert resumed.run_id == tracker.run_id
    run = client.get_run(tracker.run_id)
    assert run.data.metrics == {"valid.dice": 0.7, "test.dice": 0.8}
    assert run.info.status == "FINISHED"


# --------------------------------------------------------------------------- how runs end
def test_exception_ends_the_run_as_failed(client, repo: Path) -> None:
    with pytest.raises(ValueError, match="diverged"):
        with Tracker.start(CFG, "boom", {}, repo) as tracker:
            raise ValueError("loss diverged")
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "ValueError: loss diverged"


def test_ctrl_c_ends_the_run_as_killed(client, repo: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with Tracker.start(CFG, "ctrl-c", {}, repo) as tracker:
            raise KeyboardInterrupt
    assert client.get_run(tracker.run_id).info.status == "KILLED"


def test_sigterm_ends_the_run_as_killed_and_restores_the_handler(client, repo: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        with Tracker.start(CFG, "sigterm", {}, repo) as tracker:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
    assert stopped.value.code == 128 + signal.SIGTERM
    assert client.get_run(tracker.run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) == before


def test_runs_of_dead_processes_are_closed_when_the_next_run_opens(client, repo: Path) -> None:
    """A SIGKILLed run cannot end itself; the next run on this host ends it as FAILED."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid now belongs to no process
    experiment = client.get_experiment_by_name(CFG.experiment).experiment_id
    host = socket.gethostname()
    dead = client.create_run(experiment, tags={HOST_TAG: host, PID_TAG: str(gone.pid)}).info.run_id
    alive = client.create_run(experiment, tags={HOST_TAG: host, PID_TAG: str(os.getpid())}).info.run_id
    elsewhere = client.create_run(experiment, tags={HOST_TAG: "another-host", PID_TAG: str(gone.pid)}).info.run_id
    with Tracker.start(CFG, "next", {}, repo) as tracker:
        pass
    assert client.get_run(tracker.run_id).data.tags[PID_TAG] == str(os.getpid())
    assert client.get_run(dead).info.status == "FAILED"
    assert f"process {gone.pid} on {host} ended without closing the run" in client.get_run(dead).data.tags["error"]
    assert client.get_run(alive).info.status == "RUNNING"  # a live writer, maybe a parallel stage
    assert client.get_run(elsewhere).info.status == "RUNNING"  # pids of other hosts mean nothing here
    for run_id in (alive, elsewhere):
        client.set_terminated(run_id, "FINISHED")


# --------------------------------------------------------------------------- degraded mode
def test_unreachable_server_degrades_to_one_warning(repo: Path, monkeypatch, caplog) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    caplog.set_level(logging.WARNING)

    with Tracker.start(CFG, "offline", {"dataset": "busi"}, repo) as tracker:
        tracker.log_params({"train": {"lr": 0.1}})
        tracker.log_metrics({"loss": 1.0}, step=0)
        tracker.set_tags({"k": "v"})

    assert tracker.run_id is None and not tracker.enabled
    warnings = _tracking_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"MLflow tracking at {uri} is unreachable: ")
    assert warnings[0].endswith("; continuing without tracking")


def test_unreachable_server_fails_fast_when_required(repo: Path, monkeypatch) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    began = time.monotonic()
    with pytest.raises(TrackingError, match=f"MLflow tracking at {uri} is unreachable"):
        Tracker.start(MlflowConfig(required=True), "offline", {}, repo)
    assert time.monotonic() - began < 10


def test_no_op_tracker_still_rejects_bad_input(repo: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    # Calls that would fail with tracking on fail the same way with it off.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    caplog.set_level(logging.ERROR)  # the degraded-mode warning is tested above
    tracker = Tracker.start(CFG, "offline", {}, repo)
    with pytest.raises(ValueError):
        tracker.log_metrics({"loss": "not a number"})
    with pytest.raises(FileNotFoundError):
        tracker.log_artifact(tmp_path / "missing.pt", "model")


def test_resuming_an_unknown_run(client, repo: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    assert Tracker.resume(CFG, "0" * 32, repo).run_id is None
    assert len(_tracking_warnings(caplog)) == 1
    with pytest.raises(TrackingError):
        Tracker.resume(MlflowConfig(experiment=CFG.experiment, required=True), "0" * 32, repo)


def test_resuming_an_untracked_training_run_is_a_no_op(client, repo: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    assert not Tracker.resume(CFG, None, repo).enabled
    assert "training was not tracked" in _tracking_warnings(caplog)[0]


# --------------------------------------------------------------------------- helpers
def test_flatten_nests_with_dots_and_encodes_lists() -> None:
    nested = {"a": {"b": 1, "c": [1, 2], "d": {"e": None}}, "f": (0.5, "x"), "g": {}, "h": True}
    assert flatten(nested) == {"a.b": "1", "a.c": "[1, 2]", "a.d.e": "None", "f": '[0.5, "x"]', "g": "{}", "h": "True"}
    assert flatten({"lr": 0.1}, prefix="train") == {"train.lr": "0.1"}


def test_flatten_makes_every_key_a_name_mlflow_accepts() -> None:
    structures = {"convert": {"structures": {"livertumor*": "tumour", "liver": "liver"}}}
    assert flatten(structures) == {"convert.structures.livertumor_": "tumour", "convert.structures.liver": "liver"}


def test_params_with_a_pattern_key_are_logged(client, repo: Path) -> None:
    """The CT profiles map mask folder patterns (``livertumor*``) to classes; MLflow refuses '*' in names."""
    with Tracker.start(CFG, "ct", {}, repo) as tracker:
        tracker.log_params({"datasets": {"ircadb-liver-ct": {"structures": {"livertumor*": "tumour"}}}})
    assert client.get_run(tracker.run_id).data.params == {"datasets.ircadb-liver-ct.structures.livertumor_": "tumour"}


def test_a_failed_batch_turns_tracking_off_without_failing_the_next(client, repo: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    with Tracker.start(CFG, "changed", {}, repo) as tracker:
        tracker.log_params({"lr": 0.1})
        # MLflow refuses to change a logged param: the first of three batches fails, the other two are skipped.
        tracker.log_params({"lr": 0.2, **{f"p{i}": i for i in range(250)}})
        assert not tracker.enabled
    assert "log params failed" in _tracking_warnings(caplog)[0]


def test_flatten_truncates_to_mlflows_limits() -> None:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

    assert (MAX_PARAM_VALUE, MAX_TAG_VALUE) == (MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH)
    value = flatten({"long": "y" * 10_000})["long"]
    assert len(value) == MAX_PARAM_VALUE and value.endswith("...")
    assert flatten({"fits": "y" * MAX_PARAM_VALUE})["fits"] == "y" * MAX_PARAM_VALUE


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", *DVC_VARS):
        monkeypatch.delenv(var, raising=False)
    assert resolve_tracking_uri(MlflowConfig(), tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    configured = MlflowConfig(tracking_uri="http://tracking:5000")
    assert resolve_tracking_uri(configured, tmp_path) == "http://tracking:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://override:5000")
    assert resolve_tracking_uri(configured, tmp_path) == "http://override:5000"


def test_queued_experiments_log_into_the_users_repository(tmp_path: Path, monkeypatch) -> None:
    # dvc exp run --queue runs in a temporary copy but sets DVC_ROOT to the user's repository.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "user-repo"))
    copy = tmp_path / "tmp-copy"
    assert resolve_tracking_uri(MlflowConfig(), copy) == f"sqlite:///{tmp_path}/user-repo/mlflow.db"
    relative = MlflowConfig(tracking_uri="sqlite:///runs/mlflow.db")
    assert resolve_tracking_uri(relative, copy) == f"sqlite:///{tmp_path}/user-repo/runs/mlflow.db"


def test_git_state(repo: Path, tmp_path: Path) -> None:
    assert git_state(repo) == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": "false"}
    assert git_state(tmp_path) == {"commit": "unknown", "dirty": "unknown"}
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    (clone / "new_module.py").write_text("")  # untracked code changes what runs
    assert git_state(clone)["dirty"] == "true"
    (clone / "stages").mkdir()
    assert find_repo_root(clone / "stages").resolve() == clone.resolve()
    assert find_repo_root(tmp_path) == tmp_path


def test_dvc_context_reads_what_dvc_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in DVC_VARS:
        monkeypatch.delenv(var, raising=False)
    assert dvc_context() == {}
    monkeypatch.setenv("DVC_STAGE", "train@busi")
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    assert dvc_context() == {"stage": "train@busi", "exp_name": "lucky-lark", "exp_baseline_rev": "abc123"}


def test_the_experiment_carries_the_runs_table_view_with_the_test_dice(client, store: Path) -> None:
    """The shared view ``runs_page`` opens: Dataset, the promotion metric under ``test.``, Source, Models."""
    cfg = MlflowConfig(experiment="medseg-view", promotion={"metric": "dice.liver.mean"})
    experiment = ensure_experiment(client, cfg, f"sqlite:///{store}/mlflow.db")
    view = json.loads(client.get_experiment(experiment).tags[VIEW_TAG_PREFIX + VIEW_KEY])
    assert view["selectedColumns"] == ["attributes.`Dataset`", "metrics.`test.dice.liver.mean`",
                                       "attributes.`Source`", "attributes.`Models`"]
    client.set_experiment_tag(experiment, VIEW_TAG_PREFIX + VIEW_KEY, "{}")  # edited by hand, or an older view
    assert ensure_experiment(client, cfg, f"sqlite:///{store}/mlflow.db") == experiment
    assert json.loads(client.get_experiment(experiment).tags[VIEW_TAG_PREFIX + VIEW_KEY]) == view
    assert runs_page("http://127.0.0.1:5000/", experiment) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning"
        "&viewStateShareKey=medseg")
