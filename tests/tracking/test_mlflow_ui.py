"""The MLflow UI in headless Chromium: the runs table a user opens lists each run with its dataset and test Dice.

Runs are logged the way train and evaluate log them (``Tracker``,
``log_dataset``, ``log_evaluation``'s ``test.*`` metrics) into a sqlite store;
``mlflow ui`` serves it on 127.0.0.1 and Chromium renders the README's link.
Skips when no Chromium is installed (``.ci/run`` installs Debian's).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medseg.config import MlflowConfig
from medseg.tracking.browser import check_in_browser, find_chromium, render, serve_ui
from medseg.tracking.record import log_dataset
from medseg.tracking.run import Tracker
from medseg.tracking.ui import DATASET, SOURCE, ExpectedRow, check_runs_table, expected_row, runs_table
from medseg.tracking.values import TEST_PREFIX, numeric_metrics

REPO = Path(__file__).resolve().parents[2]
CFG = MlflowConfig(experiment="medseg-ui")
METRIC = CFG.promotion.metric
RUNS = {"synthetic": ("5f0c1d2e3a4b5c6d", 0.9123), "ddti-thyroid": ("0123456789abcdef", 0.7231)}


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium): the browser check cannot run")
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict[str, ExpectedRow]]]:
    """(UI base URL, experiment id, expected row per run name): two evaluated runs and one without its input."""
    root = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{root}/mlflow.db"
    subprocess.run(["git", "init", "-q", str(root / "repo")], check=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        rows = {name: _log_run(name, digest, score, root / "repo") for name, (digest, score) in RUNS.items()}
        rows["no-input"] = _log_run("no-input", "feedfacefeedface", 0.5, root / "repo", with_input=False)
    from mlflow import MlflowClient

    experiment = MlflowClient(uri).get_experiment_by_name(CFG.experiment).experiment_id
    with serve_ui(uri, root / "ui.log") as url:
        yield url, experiment, rows


def _log_run(name: str, digest: str, score: float, repo: Path, with_input: bool = True) -> ExpectedRow:
    """One run as train and evaluate log it, read back from the store."""
    from mlflow import MlflowClient

    with Tracker.start(CFG, run_name=name, tags={"dataset": name, "data_hash": digest}, repo_root=repo) as tracker:
        if with_input:
            log_dataset(tracker, name, digest)
        tracker.log_metrics(numeric_metrics({METRIC: score}, TEST_PREFIX))
    run = MlflowClient(tracker.uri).get_run(tracker.run_id)
    return expected_row(run.info.run_id, run.data.tags, run.data.metrics, METRIC)


def test_the_runs_table_shows_each_run_with_its_dataset_source_and_test_dice(store, chromium, tmp_path) -> None:
    url, experiment, rows = store
    evaluated = [rows[name] for name in RUNS]
    table, problems = check_in_browser(url, experiment, evaluated, METRIC, chromium, tmp_path / "page.png")
    assert problems == []
    assert table[rows["synthetic"].run_id][DATASET].startswith("synthetic (5f0c1d2e3a4b5c6d)")
    assert rows["synthetic"].source  # the script that logged it, as the UI shows it
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_its_dataset_input_is_reported(store, chromium) -> None:
    url, experiment, rows = store
    _, problems = check_in_browser(url, experiment, [rows["no-input"]], METRIC, chromium)
    assert problems == [f"run {rows['no-input'].run_id} (no-input): Dataset column shows '-', "
                        "expected 'no-input (feedfacefeedface)'"]


def test_the_experiment_link_without_the_workflow_shows_no_runs_table(store, chromium) -> None:
    """The bug the link fixes: MLflow 3.17 opens the (empty) GenAI overview instead."""
    url, experiment, rows = store
    table = runs_table(render(f"{url}/#/experiments/{experiment}", chromium))
    assert check_runs_table(table, [rows["synthetic"]], METRIC) == [
        "the page shows no runs table (the GenAI overview, or an empty experiment?)"]


def test_a_wrong_score_is_reported() -> None:
    row = ExpectedRow("r1", "synthetic", "abc", "train.py", 0.91)
    table = {"r1": {DATASET: "synthetic (abc)training", SOURCE: "train.py",
                    "metrics.`test.mean_fg_dice`": "0.85"}}
    assert check_runs_table(table, [row], "mean_fg_dice") == [
        "run r1 (synthetic): test.mean_fg_dice shows 0.85, the store has 0.9100"]


def test_the_check_script_says_when_there_is_no_browser(tmp_path: Path) -> None:
    env = {**os.environ, "MEDSEG_CHROMIUM": str(tmp_path / "no-such-browser")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "mlflow_ui_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 77, done.stderr
    assert "no Chromium found" in done.stderr
