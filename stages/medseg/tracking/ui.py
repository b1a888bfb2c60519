"""How the MLflow UI shows our experiment: the link that opens its runs table and the columns it lists.

Two things decide what ``mlflow ui`` (3.17) shows when someone opens an experiment:

- *GenAI or model training.* The UI reads the link's ``workflowType``
  parameter, else the choice last made in that browser, else GenAI. It does
  not read the experiment's ``mlflow.experimentKind`` tag (which
  ``medseg.tracking.store`` still sets, for UIs that do), so a fresh browser
  lands on an empty GenAI overview. ``runs_page`` is a link with
  ``workflowType=machine_learning``: it opens the runs table.
- *Which columns.* The runs table shows the run name, dataset, source and
  models; metric columns are chosen per browser. MLflow's shared views are
  experiment tags (``mlflow.sharedViewState.<key>``, the view as JSON, what
  the UI's Share button writes) opened with ``viewStateShareKey=<key>``.
  ``view_tag`` is ours: the default columns plus the test score
  (``test.<mlflow.promotion.metric>``, the mean foreground Dice by default).
  ``medseg.tracking.store.ensure_experiment`` keeps it on the experiment.
"""
from __future__ import annotations

import json

from .values import evaluation_metric

VIEW_KEY = "medseg"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # the UI's prefix for shared views
WORKFLOW = "machine_learning"  # the UI's name for its "Model training" side


def column(group: str, name: str) -> str:
    """A runs-table column id as the UI writes it: ``attributes.`Dataset```, ``metrics.`test.dice```."""
    return f"{group}.`{name}`"


RUN_NAME, DATASET, SOURCE, MODELS = (column("attributes", name) for name in ("Run Name", "Dataset", "Source", "Models"))


def view_tag(metric: str) -> tuple[str, str]:
    """Our shared view as an experiment tag (name, JSON value): default columns plus ``test.<metric>``."""
    view = {"selectedColumns": [DATASET, column("metrics", evaluation_metric(metric)), SOURCE, MODELS]}
    return VIEW_TAG_PREFIX + VIEW_KEY, json.dumps(view)


def runs_page(base_url: str, experiment_id: str) -> str:
    """The link that opens the experiment's runs table in our view, e.g. ``http://127.0.0.1:5000/#/...``."""
    return (f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType={WORKFLOW}&viewStateShareKey={VIEW_KEY}")
