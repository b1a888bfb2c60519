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

``runs_table`` reads that table out of the page's DOM (as headless Chromium
renders it, ``medseg.tracking.browser``) and ``check_runs_table`` says what it
lacks for each run: the row, its dataset and data hash, its source, its test
score. ``benchmarks/mlflow_ui_check.py`` runs both against the pipeline's store.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath

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


# --------------------------------------------------------------------------- reading the rendered page
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())


class _GridReader(HTMLParser):
    """Cells (``role=gridcell`` with ``col-id``) under rows (``role=row`` with ``row-id``, the run id).

    The UI's grid draws one run's row in several containers (pinned and
    scrolling columns), each with the same ``row-id``: their cells are merged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = defaultdict(dict)
        self._open: list[tuple[str, str | None, str | None, list[str]]] = []  # tag, row id, column id, text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        a = dict(attrs)
        row = a.get("row-id") if a.get("role") == "row" else None
        col = a.get("col-id") if a.get("role") == "gridcell" else None
        self._open.append((tag, row, col, []))

    def handle_endtag(self, tag: str) -> None:
        while self._open:  # also closes what the page left open inside
            name, _, col, text = self._open.pop()
            if col is not None:
                row = next((r for _, r, _, _ in reversed(self._open) if r), None)
                if row is not None:
                    self.rows[row][col] = " ".join(" ".join(text).split())
            if self._open:
                self._open[-1][3].extend(text)
            if name == tag:
                return

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][3].append(data)


def runs_table(dom: str) -> dict[str, dict[str, str]]:
    """The runs table in a rendered page: run id -> {column id -> the cell's text}; empty when there is none."""
    reader = _GridReader()
    reader.feed(dom)
    reader.close()
    return dict(reader.rows)


# --------------------------------------------------------------------------- what each run's row must show
@dataclass(frozen=True)
class ExpectedRow:
    """What our view shows for one run: its dataset input, script and test score."""

    run_id: str
    dataset: str
    data_hash: str
    source: str
    score: float | None  # test.<metric>; None when the run has not been evaluated

    @property
    def dataset_cell(self) -> str:
        """The Dataset cell starts with this: the input's name and digest (``MetaDataset``'s, ours)."""
        return f"{self.dataset} ({self.data_hash})"


def expected_row(run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float], metric: str) -> ExpectedRow:
    """From a run's tags and metrics as the store has them (the pipeline's ``dataset``/``data_hash`` tags)."""
    return ExpectedRow(run_id=run_id, dataset=tags.get("dataset", ""), data_hash=tags.get("data_hash", ""),
                       source=PurePosixPath(tags.get("mlflow.source.name", "")).name,
                       score=metrics.get(evaluation_metric(metric)))


SCORE_TOLERANCE = 5e-4  # the UI may round a metric to 3 decimals


def check_runs_table(table: Mapping[str, Mapping[str, str]], expected: Iterable[ExpectedRow],
                     metric: str) -> list[str]:
    """What the rendered table lacks, one line per problem; ``[]`` when every run shows what it should."""
    score = evaluation_metric(metric)
    problems = [] if table else ["the page shows no runs table (the GenAI overview, or an empty experiment?)"]
    for row in expected:
        name = f"run {row.run_id} ({row.dataset or 'no dataset tag'})"
        cells = table.get(row.run_id)
        if cells is None:
            problems += [f"{name}: not in the runs table"] if table else []
            continue
        shown = cells.get(DATASET, "")
        if not shown.startswith(row.dataset_cell):
            problems.append(f"{name}: Dataset column shows {shown!r}, expected {row.dataset_cell!r}")
        if cells.get(SOURCE, "") != row.source:
            problems.append(f"{name}: Source column shows {cells.get(SOURCE, '')!r}, expected {row.source!r}")
        problems += _score_problems(name, cells.get(column("metrics", score)), row.score, score)
    return problems


def _score_problems(name: str, shown: str | None, score: float | None, metric: str) -> list[str]:
    if score is None:
        return [f"{name}: the store has no {metric} (not evaluated)"]
    if shown is None:
        return [f"{name}: no {metric} column in the table"]
    try:
        value = float(shown)
    except ValueError:
        return [f"{name}: {metric} shows {shown!r}, expected {score:.4f}"]
    if not math.isclose(value, score, abs_tol=SCORE_TOLERANCE):
        return [f"{name}: {metric} shows {value}, the store has {score:.4f}"]
    return []

