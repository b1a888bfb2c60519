"""Where MLflow runs go, where they came from, and the runs dead processes left open.

``resolve_tracking_uri``: ``$MLFLOW_TRACKING_URI``, else ``mlflow.tracking_uri``,
else ``sqlite:///<root>/mlflow.db`` (artifacts in ``<root>/mlruns/``), with
``<root>`` = ``$DVC_ROOT`` when DVC runs the stage, so experiments in
temporary copies log into the user's repository. ``provenance_tags``: the
git commit and the script (``mlflow.source.git.commit``, ``mlflow.source.name``,
which the MLflow UI shows), the dirty flag, the DVC stage and experiment, the host and pid holding the run.
``ensure_experiment`` marks the experiment as model training
(``mlflow.experimentKind``) and keeps our runs-table view on it
(``medseg.tracking.ui``: MLflow 3.17's UI no longer opens an experiment by
its kind; our link says so, and the view lists the test Dice).
``close_dead_runs``: RUNNING runs of this host whose process is gone end as
FAILED. ``fail_fast``: the first request to a server has retries off and a
short timeout, so a stage learns within seconds that the server is down.
MLflow is imported only when a store is opened; importing it takes seconds.
See docs/ARCHITECTURE.md, "Run keys".
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.config import MlflowConfig
from medseg.io.atomic import process_alive
from medseg.io.errors import StageError

from .ui import view_tag

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# The first request to a tracking server doubles as the connectivity check.
# MLflow's defaults (7 retries with exponential back-off, 120 s timeout) would
# stall a stage for minutes before it learns the server is down.
_PROBE_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}

# Set by DVC for every stage command (dvc/stage/run.py) and, for experiments,
# by the experiment queue (dvc/repo/experiments/queue/base.py).
_DVC_ENV = {"DVC_STAGE": "stage", "DVC_EXP_NAME": "exp_name", "DVC_EXP_BASELINE_REV": "exp_baseline_rev"}

_SQLITE = "sqlite:///"
COMMIT_TAG = "mlflow.source.git.commit"  # the name the MLflow UI shows as the source commit
HOST_TAG, PID_TAG = "medseg.host", "medseg.pid"  # the process that holds a run open
SOURCE_NAME_TAG, SOURCE_TYPE_TAG = "mlflow.source.name", "mlflow.source.type"  # the script, as the UI shows it
# Earlier MLflow 3 UIs open an experiment of this kind on its runs table, not on GenAI traces
# (the tag and values are the UI's: mlflow/server/js, "mlflow.experimentKind"); 3.17 goes by
# the link instead (medseg.tracking.ui).
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
_ARTIFACT_DIR = "mlruns"  # beside the sqlite file; already in .gitignore


class TrackingError(StageError):
    """MLflow tracking failed while ``mlflow.required`` is true."""


def find_repo_root(start: Path | None = None) -> Path:
    """The git work tree containing ``start`` (default: the current directory), else ``start``."""
    start = Path.cwd() if start is None else Path(start)
    top = _git(start, "rev-parse", "--show-toplevel")
    return Path(top) if top else start


def resolve_tracking_uri(cfg: MlflowConfig, repo_root: Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``cfg.tracking_uri``, else the sqlite file at the store root.

    The store root is ``$DVC_ROOT`` when set (see the module docstring), else ``repo_root``.
    """
    root = Path(os.environ.get("DVC_ROOT") or repo_root).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri or f"{_SQLITE}mlflow.db"
    return _anchor_sqlite(uri, root)


def _anchor_sqlite(uri: str, root: Path) -> str:
    # A relative sqlite path would follow the stage's working directory, which
    # for a queued experiment is a temporary copy deleted after the run.
    if not uri.startswith(_SQLITE):
        return uri
    path = uri[len(_SQLITE):]
    if path.startswith(":memory:") or Path(path).is_absolute():
        return uri
    return f"{_SQLITE}{(root / path).as_posix()}"


def git_state(repo_root: Path) -> dict[str, str]:
    """``{"commit": sha, "dirty": "true"|"false"}``; ``"unknown"`` outside a git work tree."""
    commit = _git(repo_root, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": "unknown", "dirty": "unknown"}
    # Untracked files count: a new, uncommitted module changes what ran.
    status = _git(repo_root, "status", "--porcelain")
    return {"commit": commit, "dirty": "unknown" if status is None else str(bool(status)).lower()}


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):  # no git, no repo, no commit yet
        return None
    return done.stdout.strip()


def dvc_context() -> dict[str, str]:
    """The DVC stage (``train@busi``) and experiment name and baseline, when DVC runs us."""
    return {key: os.environ[var] for var, key in _DVC_ENV.items() if os.environ.get(var)}


def process_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def source_name(repo_root: Path) -> str:
    """The script this process runs, relative to the repository (``stages/train.py``) when inside it."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("<interactive>")
    try:
        return script.resolve().relative_to(Path(repo_root).resolve()).as_posix()
    except (OSError, ValueError):  # a script outside the repository (pytest, python -c) keeps its own path
        return script.as_posix()


def provenance_tags(repo_root: Path) -> dict[str, str]:
    git = git_state(repo_root)
    tags = {COMMIT_TAG: git["commit"], "git.dirty": git["dirty"], **process_tags(),
            SOURCE_NAME_TAG: source_name(repo_root), SOURCE_TYPE_TAG: "LOCAL"}
    tags.update({f"dvc.{key}": value for key, value in dvc_context().items()})
    return tags


def connect(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in _PROBE_ENV}
    os.environ.update(_PROBE_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ensure_experiment(client: MlflowClient, cfg: MlflowConfig, uri: str) -> str:
    """The id of experiment ``cfg.experiment``, created (artifacts beside a sqlite store) when missing.

    It is tagged as model training, with our runs-table view listing ``test.<cfg.promotion.metric>``.
    """
    name = cfg.experiment
    view, columns = view_tag(cfg.promotion.metric)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(uri),
                                            tags={KIND_TAG: TRAINING_KIND, view: columns})
        except Exception:
            # Another stage (a parallel queue worker) may have created it meanwhile.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment {name!r} is deleted; restore it (`mlflow experiments restore`) "
            "or set another mlflow.experiment"
        )
    if KIND_TAG not in experiment.tags:  # one a user set in the UI stays
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, TRAINING_KIND)
    if experiment.tags.get(view) != columns:  # ours: follows the promotion metric
        client.set_experiment_tag(experiment.experiment_id, view, columns)
    return experiment.experiment_id


def _artifact_location(uri: str) -> str | None:
    # MLflow's default for a sqlite store is ./mlruns under whatever directory
    # the experiment happened to be created from; pin it next to the database.
    # Servers choose their own artifact store, so leave it to them.
    if not uri.startswith(_SQLITE) or ":memory:" in uri:
        return None
    return (Path(uri[len(_SQLITE):]).parent / _ARTIFACT_DIR).as_uri()


def check_key(key: Mapping[str, str]) -> None:
    # MLflow's filter grammar has no escape for a quote inside a value; our
    # values are hashes, commits and dataset names, so one means a bug.
    for name, value in key.items():
        if "'" in value or "`" in name:
            raise ValueError(f"run key {name}={value!r}: quotes cannot be searched for")


def close_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """End as FAILED the RUNNING runs of this host whose process is gone; return their ids."""
    host = socket.gethostname()
    check_key({HOST_TAG: host})
    runs = client.search_runs([experiment_id], filter_string=f"attributes.status = 'RUNNING' and "
                                                             f"tags.`{HOST_TAG}` = '{host}'")
    closed = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not process_alive(int(pid)):
            client.set_tag(run.info.run_id, "error", f"process {pid} on {host} ended without closing the run "
                                                     "(killed outright, e.g. SIGKILL or out of memory)")
            client.set_terminated(run.info.run_id, "FAILED")
            log.warning("MLflow run %s was left RUNNING by process %s, which is gone; marked FAILED",
                        run.info.run_id, pid)
            closed.append(run.info.run_id)
    return closed


def reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
