"""One MLflow run per result: the run key, finding a run by it, creating one when none exists.

``run_key`` is the current commit plus the dataset, data hash and params
hash; ``find_run`` looks for a finished run tagged with it and ``sync_run``
creates one only when there is none. Why the key holds the commit but not the
dirty flag, and when a new run appears: docs/ARCHITECTURE.md, "Run keys".
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medseg.config import MlflowConfig

from .run import Tracker
from .store import COMMIT_TAG, check_key, close_dead_runs, connect, fail_fast, git_state, resolve_tracking_uri

log = logging.getLogger(__name__)


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
    client = connect(uri)
    with fail_fast():
        experiment = client.get_experiment_by_name(cfg.experiment)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            return None
        runs = client.search_runs([experiment.experiment_id], filter_string=_key_filter(key), max_results=1,
                                  order_by=["attributes.start_time ASC"])
    return runs[0].info.run_id if runs else None


def _key_filter(key: Mapping[str, str]) -> str:
    check_key(key)
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
    check_key(key)  # a bad key is a bug, not an unavailable store
    try:
        client = connect(resolve_tracking_uri(cfg, repo_root))
        with fail_fast():
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
