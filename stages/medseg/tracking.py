"""Experiment tracking with MLflow: the one module that talks to MLflow.

The train stage opens a run with ``Tracker.start(cfg, run_name, tags,
repo_root)`` and logs flattened params, per-epoch metrics and the checkpoint;
the evaluate stage reopens the same run with ``Tracker.resume(cfg, run_id,
repo_root)`` and adds the test metrics. Used as a context manager, a tracker
ends its run as FINISHED, as FAILED when the block raises, and as KILLED on
Ctrl-C or SIGTERM (``dvc queue kill``), so no run is left RUNNING.

Every run is tagged with where it came from: the git commit
(``mlflow.source.git.commit``, which the MLflow UI shows), whether the work
tree was dirty (``git.dirty``), and the DVC stage and experiment that ran it
(``dvc.stage``, ``dvc.exp_name``, ``dvc.exp_baseline_rev``).

Where runs go (``resolve_tracking_uri``): ``$MLFLOW_TRACKING_URI``, else
``mlflow.tracking_uri`` from ``params.yaml``, else ``sqlite:///<root>/mlflow.db``
with artifacts in ``<root>/mlruns/``. ``<root>`` is ``$DVC_ROOT`` when DVC runs
the stage: DVC points it at the user's repository even when an experiment
runs in a temporary copy (``dvc exp run --temp``, ``--queue``), so those runs
land in the same store (tests/test_track.py runs both). Relative sqlite paths
are relative to that root too. For parallel queue workers or runs on other
machines, start a tracking server (``mlflow server``) and set
``MLFLOW_TRACKING_URI`` to it.

Each result is recorded once per *run key*: the git commit, dataset, data hash
and params hash (``run_key``). The train stage's run carries the key in its
tags; the track stage (``sync_run``) searches for a finished run with the key
(``find_run``) and creates one from the files on disk only when there is none,
e.g. when DVC restored train and evaluate from its run-cache or the results
were committed since they were computed. The key holds the commit but not the
dirty flag, which stays a plain tag: a stage run always leaves the work tree
dirty (it rewrites dvc.lock and the metrics files), so the training run (maybe
clean) and the sync right after it (always dirty) must match on the commit
alone. The clean record of a result comes once the result is committed: the
next sync then finds no run for the new commit and adds one (``git.dirty:
false``).

A run whose process was killed outright (SIGKILL, the OOM killer, power
loss) cannot end itself and would stay RUNNING. Every run is tagged with its
host and process id (``medseg.host``, ``medseg.pid``); whenever a run is
opened or synced, RUNNING runs of this host whose process no longer exists
are ended as FAILED with an ``error`` tag (``close_dead_runs``).

When the store cannot be reached, ``mlflow.required: false`` (the default)
turns the tracker into a no-op after one warning, so training still finishes
(``run_id`` is then ``None``); ``mlflow.required: true`` raises
``TrackingError`` at once. MLflow is imported only when a run is opened,
because importing it takes seconds.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .atomic import process_alive
from .config import MlflowConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation), copied so that ``flatten`` does not
# import MLflow; tests/test_tracking.py checks they still match.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000

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
_ARTIFACT_DIR = "mlruns"  # beside the sqlite file; already in .gitignore
_MODEL_DIR = "model"

T = TypeVar("T")


class TrackingError(RuntimeError):
    """MLflow tracking failed while ``mlflow.required`` is true."""


class Terminated(SystemExit):
    """SIGTERM arrived inside a tracked block; exits with the conventional 128 + 15."""


# --------------------------------------------------------------------------- where and what
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


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1, "c": [1, 2]}}`` -> ``{"a.b": "1", "a.c": "[1, 2]"}``, values cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = _truncate(_as_text(value), MAX_PARAM_VALUE)
    return flat


def numeric_metrics(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in nested ``d``, flattened like ``flatten``; text, lists, booleans and ``None`` are left out.

    ``numeric_metrics({"dice": {"liver": 0.9}, "n": 3, "note": None}, "test")``
    is ``{"test.dice.liver": 0.9, "test.n": 3.0}``.
    """
    return {name: float(value) for name, value in flatten(d, prefix).items() if _is_float(value)}


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(value, default=str)
    return str(value)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _process_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _provenance_tags(repo_root: Path) -> dict[str, str]:
    git = git_state(repo_root)
    tags = {COMMIT_TAG: git["commit"], "git.dirty": git["dirty"], **_process_tags()}
    tags.update({f"dvc.{key}": value for key, value in dvc_context().items()})
    return tags


def _tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _truncate(str(v), MAX_TAG_VALUE) for k, v in tags.items()}


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- MLflow calls
def _connect(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
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


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, creating it (artifacts beside a sqlite store) when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(uri))
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
    return experiment.experiment_id


def _artifact_location(uri: str) -> str | None:
    # MLflow's default for a sqlite store is ./mlruns under whatever directory
    # the experiment happened to be created from; pin it next to the database.
    # Servers choose their own artifact store, so leave it to them.
    if not uri.startswith(_SQLITE) or ":memory:" in uri:
        return None
    return (Path(uri[len(_SQLITE):]).parent / _ARTIFACT_DIR).as_uri()


def close_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """End as FAILED the RUNNING runs of this host whose process is gone; return their ids."""
    host = socket.gethostname()
    _check_key({HOST_TAG: host})
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


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        return "KILLED"
    if isinstance(exc, SystemExit) and exc.code in (0, None):  # sys.exit(0) is a success
        return "FINISHED"
    return "FAILED"


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(128 + signum)


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# --------------------------------------------------------------------------- the tracker
class Tracker:
    """One MLflow run, or the documented no-op when tracking is unavailable and not required."""

    def __init__(self, client: MlflowClient | None, run_id: str | None, uri: str, required: bool) -> None:
        self._client = client
        self._run_id = run_id
        self.uri = uri
        self._required = required
        self._sigterm_installed = False
        self._previous_sigterm: Any = signal.SIG_DFL

    @classmethod
    def start(cls, cfg: MlflowConfig, run_name: str, tags: Mapping[str, Any], repo_root: Path) -> Tracker:
        """Open a new run in ``cfg.experiment`` (created if missing), tagged with git and DVC provenance."""
        uri = resolve_tracking_uri(cfg, repo_root)
        all_tags = _tag_values({**_provenance_tags(repo_root), **tags})
        # Broad on purpose: with mlflow.required false, no failure of the
        # tracking backend may cost a training run. It is reported, not hidden.
        try:
            client = _connect(uri)
            with _fail_fast():
                experiment_id = _experiment_id(client, cfg.experiment, uri)
            close_dead_runs(client, experiment_id)
            run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        except Exception as exc:
            return cls._unavailable(cfg, uri, exc)
        log.info("MLflow run %s (%s) in experiment %r at %s", run.info.run_id, run_name, cfg.experiment, uri)
        return cls(client, run.info.run_id, uri, cfg.required)

    @classmethod
    def resume(cls, cfg: MlflowConfig, run_id: str | None, repo_root: Path) -> Tracker:
        """Reopen run ``run_id`` (e.g. the training run, for the test metrics); ``None`` gives the no-op."""
        uri = resolve_tracking_uri(cfg, repo_root)
        if run_id is None:
            return cls._unavailable(cfg, uri, TrackingError("there is no run to resume (training was not tracked)"))
        try:
            from mlflow.entities import RunTag

            client = _connect(uri)
            with _fail_fast():
                # This process holds the run now (the one that created it has
                # ended): tag it first, or a sweep could close the reopened run.
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in _process_tags().items()])
                client.update_run(run_id, status="RUNNING")
        except Exception as exc:  # broad for the same reason as in start()
            return cls._unavailable(cfg, uri, exc)
        log.info("MLflow run %s resumed at %s", run_id, uri)
        return cls(client, run_id, uri, cfg.required)

    @classmethod
    def off(cls) -> Tracker:
        """A tracker that records nothing: training processes other than process 0 use it."""
        return cls(None, None, "", required=False)

    @classmethod
    def _unavailable(cls, cfg: MlflowConfig, uri: str, exc: Exception) -> Tracker:
        problem = "is unreachable" if uri.startswith(("http://", "https://")) else "failed"
        message = f"MLflow tracking at {uri} {problem}: {_reason(exc)}"
        if cfg.required:
            raise TrackingError(f"{message} (mlflow.required is true)") from exc
        log.warning("%s; continuing without tracking", message)
        return cls(None, None, uri, required=False)

    # ----------------------------------------------------------------- state
    @property
    def run_id(self) -> str | None:
        """The MLflow run id; ``None`` when tracking is off."""
        return self._run_id

    @property
    def enabled(self) -> bool:
        return self._client is not None

    # ----------------------------------------------------------------- logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log nested params flattened with dots (see ``flatten``)."""
        items = list(flatten(params).items())
        if self._client is None:
            return
        from mlflow.entities import Param

        for chunk in _chunks(items, _PARAMS_PER_BATCH):
            self._call("log params", self._client.log_batch, self._run_id, params=[Param(k, v) for k, v in chunk])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (e.g. the epoch); MLflow keeps the history per step."""
        values = [(str(k), float(v)) for k, v in metrics.items()]  # bad values fail even when tracking is off
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entities = [Metric(k, v, now, step or 0) for k, v in values]
        for chunk in _chunks(entities, _METRICS_PER_BATCH):
            self._call("log metrics", self._client.log_batch, self._run_id, metrics=chunk)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        values = _tag_values(tags)
        if self._client is None:
            return
        from mlflow.entities import RunTag

        entities = [RunTag(k, v) for k, v in values.items()]
        for chunk in _chunks(entities, _PARAMS_PER_BATCH):
            self._call("set tags", self._client.log_batch, self._run_id, tags=chunk)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Upload a file or a whole folder under ``artifact_path``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such artifact to log")
        if self._client is None:
            return
        upload = self._client.log_artifacts if path.is_dir() else self._client.log_artifact
        self._call(f"log artifact {path.name}", upload, self._run_id, str(path), artifact_path)

    def log_model_file(self, path: Path | str) -> None:
        """Upload the checkpoint file under ``model/``."""
        self.log_artifact(path, _MODEL_DIR)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Store ``data`` as a JSON (``.json``) or YAML (``.yaml``) artifact."""
        if self._client is None:
            return
        self._call(f"log {artifact_file}", self._client.log_dict, self._run_id, dict(data), artifact_file)

    def _call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            message = f"MLflow tracking at {self.uri}: {action} failed: {_reason(exc)}"
            if self._required:
                raise TrackingError(message) from exc
            # One warning, then silence: a server that died mid-run would
            # otherwise warn (and wait on retries) at every epoch.
            log.warning("%s; continuing without tracking", message)
            self._client = None
            return None

    # ----------------------------------------------------------------- lifetime
    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED (does nothing when tracking is off)."""
        if self._client is not None:
            self._call(f"end run as {status}", self._client.set_terminated, self._run_id, status)

    def __enter__(self) -> Tracker:
        # Python only lets the main thread install handlers. SIGTERM normally
        # kills without unwinding; raising instead lets __exit__ mark the run.
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
            # None means a handler installed outside Python; the default is the closest we can restore.
            self._previous_sigterm = signal.SIG_DFL if previous is None else previous
            self._sigterm_installed = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sigterm_installed:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._sigterm_installed = False
        status = _status_for(exc)
        try:
            if status == "FAILED" and exc is not None:
                self.set_tags({"error": f"{type(exc).__name__}: {exc}"})
            self.end(status)
        except TrackingError:
            if exc is None:
                raise
            # Never hide the error that ended the block behind a tracking one.
            log.exception("could not mark MLflow run %s as %s", self._run_id, status)


# --------------------------------------------------------------------------- one run per result
def run_key(repo_root: Path, dataset: str, data_hash: str, params_hash: str) -> dict[str, str]:
    """The tags that identify a result: current commit, dataset, data hash, params hash.

    The dirty flag is left out on purpose (see the module docstring).
    """
    return {COMMIT_TAG: git_state(repo_root)["commit"], "dataset": dataset, "data_hash": data_hash,
            "params_hash": params_hash}


def find_run(cfg: MlflowConfig, repo_root: Path, key: Mapping[str, str]) -> str | None:
    """The oldest FINISHED, not deleted run in ``cfg.experiment`` tagged with all of ``key``, else ``None``.

    FAILED and KILLED runs do not count: they may lack the results. Raises
    whatever MLflow raises when the store cannot be searched.
    """
    uri = resolve_tracking_uri(cfg, repo_root)
    client = _connect(uri)
    with _fail_fast():
        experiment = client.get_experiment_by_name(cfg.experiment)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            return None
        runs = client.search_runs([experiment.experiment_id], filter_string=_key_filter(key), max_results=1,
                                  order_by=["attributes.start_time ASC"])
    return runs[0].info.run_id if runs else None


def _check_key(key: Mapping[str, str]) -> None:
    # MLflow's filter grammar has no escape for a quote inside a value; our
    # values are hashes, commits and dataset names, so one means a bug.
    for name, value in key.items():
        if "'" in value or "`" in name:
            raise ValueError(f"run key {name}={value!r}: quotes cannot be searched for")


def _key_filter(key: Mapping[str, str]) -> str:
    _check_key(key)
    clauses = [f"tags.`{name}` = '{value}'" for name, value in key.items()]
    return " and ".join([*clauses, "attributes.status = 'FINISHED'"])


def sync_run(cfg: MlflowConfig, repo_root: Path, run_name: str, key: Mapping[str, str],
             tags: Mapping[str, Any], fill: Callable[[Tracker], None]) -> str | None:
    """Make sure the store holds one finished run for ``key``; return its id.

    An existing run (``find_run``) is left as it is. Otherwise a new run named
    ``run_name`` is opened with the key, ``tags`` and the usual provenance as
    tags, and ``fill`` logs the results into it. When the store cannot be
    reached this follows ``cfg.required`` like ``Tracker.start``: raise
    ``TrackingError``, or warn once and return ``None``.
    """
    _check_key(key)  # a bad key is a bug, not an unavailable store
    try:
        client = _connect(resolve_tracking_uri(cfg, repo_root))
        with _fail_fast():
            experiment = client.get_experiment_by_name(cfg.experiment)
            if experiment is not None:
                close_dead_runs(client, experiment.experiment_id)
        existing = find_run(cfg, repo_root, key)
    except Exception as exc:  # broad for the same reason as in Tracker.start()
        return Tracker._unavailable(cfg, resolve_tracking_uri(cfg, repo_root), exc).run_id
    described = ", ".join(f"{name}={value}" for name, value in key.items())
    if existing is not None:
        log.info("MLflow run %s already records %s; nothing to sync", existing, described)
        return existing
    with Tracker.start(cfg, run_name, {**key, **tags}, repo_root) as tracker:
        fill(tracker)
    if tracker.run_id is not None:
        log.info("MLflow run %s created for %s", tracker.run_id, described)
    return tracker.run_id
