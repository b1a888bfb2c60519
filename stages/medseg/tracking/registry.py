"""The model registry: one registered model per dataset, one version per training result.

``medseg-<dataset>`` (``registered_name``) holds a version for every run
whose first round's checkpoint was logged as an MLflow model
(``medseg.tracking.pyfunc``), by train or by track alike
(``medseg.tracking.record.log_checkpoint``). A version's tags name the run
key (commit, dataset, data hash, params hash) and the checkpoint, so a
version says which result it is without opening its run. ``register`` is
idempotent: a run has at most one version, however often it is asked. Which
version serves (the ``champion`` alias) is decided by ``medseg.tracking.promote``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .store import COMMIT_TAG, check_key

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

KEY_TAGS = (COMMIT_TAG, "dataset", "data_hash", "params_hash")  # the run key, as run and version tags
CHECKPOINT_TAG = "medseg.checkpoint"


def registered_name(dataset: str) -> str:
    return f"medseg-{dataset}"


def version_of_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The version of ``name`` made from run ``run_id``, else ``None``."""
    check_key({"name": name, "run_id": run_id})
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def register(client: MlflowClient, model_uri: str, run_id: str, tags: Mapping[str, str]) -> ModelVersion:
    """The version of ``medseg-<tags["dataset"]>`` for run ``run_id``, created from ``model_uri`` if missing."""
    from mlflow.exceptions import MlflowException

    name = registered_name(tags["dataset"])
    existing = version_of_run(client, name, run_id)
    if existing is not None:
        return existing
    try:
        client.create_registered_model(name, description=f"Segmentation models of dataset {tags['dataset']}, "
                                                          "one version per training result")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=dict(tags),
                                          model_id=model_id)
    log.info("registered %s version %s (run %s)", name, version.version, run_id)
    return version
