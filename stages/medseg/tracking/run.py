"""One MLflow run, opened by train, reopened by evaluate, and always closed.

The train stage opens a run with ``Tracker.start(cfg, run_name, tags,
repo_root)`` and logs flattened params, per-epoch metrics and the checkpoint;
the evaluate stage reopens the same run with ``Tracker.resume(cfg, run_id,
repo_root)`` and adds the test metrics (what each logs is defined once, in
``medseg.tracking.record``). Used as a context manager, a tracker ends its
run as FINISHED, as FAILED when the block raises, and as KILLED on Ctrl-C or
SIGTERM (``dvc queue kill``), so no run is left RUNNING.

When the store cannot be reached, ``mlflow.required: false`` (the default)
turns the tracker into a no-op after one warning, so training still finishes
(``run_id`` is then ``None``); ``mlflow.required: true`` raises
``TrackingError`` at once.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from medseg.config import MlflowConfig
from medseg.io.errors import Terminated, raise_terminated

from .store import (
    TrackingError,
    close_dead_runs,
    connect,
    ensure_experiment,
    fail_fast,
    process_tags,
    provenance_tags,
    reason,
    resolve_tracking_uri,
)
from .values import chunks, flatten, tag_values

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000

T = TypeVar("T")


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        return "KILLED"
    if isinstance(exc, SystemExit) and exc.code in (0, None):  # sys.exit(0) is a success
        return "FINISHED"
    return "FAILED"


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
        all_tags = tag_values({**provenance_tags(repo_root), **tags})
        # Broad on purpose: with mlflow.required false, no failure of the
        # tracking backend may cost a training run. It is reported, not hidden.
        try:
            client = connect(uri)
            with fail_fast():
                experiment_id = ensure_experiment(client, cfg, uri)
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

            client = connect(uri)
            with fail_fast():
                # This process holds the run now (the one that created it has
                # ended): tag it first, or a sweep could close the reopened run.
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in process_tags().items()])
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
        message = f"MLflow tracking at {uri} {problem}: {reason(exc)}"
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

        for chunk in chunks(items, _PARAMS_PER_BATCH):
            if self._client is None:  # a failed batch turned tracking off
                return
            self._call("log params", self._client.log_batch, self._run_id, params=[Param(k, v) for k, v in chunk])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (e.g. the epoch); MLflow keeps the history per step."""
        values = [(str(k), float(v)) for k, v in metrics.items()]  # bad values fail even when tracking is off
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entities = [Metric(k, v, now, step or 0) for k, v in values]
        for chunk in chunks(entities, _METRICS_PER_BATCH):
            if self._client is None:  # a failed batch turned tracking off
                return
            self._call("log metrics", self._client.log_batch, self._run_id, metrics=chunk)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        values = tag_values(tags)
        if self._client is None:
            return
        from mlflow.entities import RunTag

        entities = [RunTag(k, v) for k, v in values.items()]
        for chunk in chunks(entities, _PARAMS_PER_BATCH):
            if self._client is None:  # a failed batch turned tracking off
                return
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

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Store ``data`` as a JSON (``.json``) or YAML (``.yaml``) artifact."""
        if self._client is None:
            return
        self._call(f"log {artifact_file}", self._client.log_dict, self._run_id, dict(data), artifact_file)

    def call(self, action: str, fn: Callable[[MlflowClient, str], T]) -> T | None:
        """``fn(client, run_id)`` on this run's store, failing as the logging calls do; ``None`` when off.

        For what the methods here do not cover (a model, a run input).
        """
        if self._client is None:
            return None
        return self._call(action, fn, self._client, self._run_id)

    def _call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            message = f"MLflow tracking at {self.uri}: {action} failed: {reason(exc)}"
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
            previous = signal.signal(signal.SIGTERM, raise_terminated)
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
