"""The MLflow UI as a user sees it: each active dataset's run in the runs table, in headless Chromium.

After ``dvc repro``, this starts ``mlflow ui`` on the pipeline's store (the
sqlite file ``medseg.tracking.store.resolve_tracking_uri`` names; with an
``http(s)`` store it opens that server instead), opens the link the README
gives (``medseg.tracking.ui.runs_page``) in headless Chromium, and reads the
rendered runs table. For the newest finished run of every dataset in
``params.yaml``'s ``active`` it checks that the row is there, that the Dataset
column shows ``<dataset> (<data hash>)``, the Source column the stage script,
and the ``test.<mlflow.promotion.metric>`` column the run's test score.

Writes ``benchmarks/results/mlflow_ui.md`` (one row per run, the CPU and
versions) and ``benchmarks/results/mlflow_ui.png`` (the page as rendered).
Exit 0 when every row is right, 1 when something is missing (each problem
printed), 77 when no Chromium is installed (``apt-get install chromium``, or
``MEDSEG_CHROMIUM=/path/to/chrome``).

    python benchmarks/mlflow_ui_check.py [--datasets synthetic ...] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import mlflow
from ct_volumes import cpu_model

from medseg.config.params import load_params
from medseg.tracking.browser import check_in_browser, find_chromium, serve_ui
from medseg.tracking.store import connect, resolve_tracking_uri
from medseg.tracking.ui import DATASET, SOURCE, ExpectedRow, column, expected_row
from medseg.tracking.values import evaluation_metric

REPO = Path(__file__).resolve().parents[1]
NO_BROWSER = 77  # the exit status of a check that could not run (automake's "skipped")
log = logging.getLogger("mlflow_ui_check")


def newest_runs(client, experiment_id: str, datasets: list[str], metric: str) -> tuple[list[ExpectedRow], list[str]]:
    """The newest finished run of each dataset, and the datasets that have none."""
    rows, missing = [], []
    for name in datasets:
        runs = client.search_runs([experiment_id], f"tags.dataset = '{name}' and attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            run = runs[0]
            rows.append(expected_row(run.info.run_id, run.data.tags, run.data.metrics, metric))
        else:
            missing.append(f"{name}: no finished run in the store (run `dvc repro` first)")
    return rows, missing


def write_report(path: Path, rows: list[ExpectedRow], table: dict, metric: str, problems: list[str],
                 chromium: str, store: str) -> None:
    score = column("metrics", evaluation_metric(metric))
    browser = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# The MLflow UI in headless Chromium",
        "",
        f"Run {datetime.now():%Y-%m-%d %H:%M} on {cpu_model()}: {browser}, MLflow {mlflow.__version__}, "
        f"store `{store}`.",
        "Command: `python benchmarks/mlflow_ui_check.py`. Picture: `mlflow_ui.png`.",
        "",
        f"| dataset | run | Dataset column | Source column | {evaluation_metric(metric)} shown | in the store |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = table.get(row.run_id, {})
        stored = "-" if row.score is None else f"{row.score:.4f}"
        lines.append(f"| {row.dataset} | `{row.run_id[:8]}` | {cells.get(DATASET, 'absent')} | "
                     f"{cells.get(SOURCE, 'absent')} | {cells.get(score, 'absent')} | {stored} |")
    lines += ["", "Problems: none." if not problems else "Problems:", *[f"- {p}" for p in problems], ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", help="default: params.yaml's active")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    chromium = find_chromium()
    if chromium is None:
        log.error("no Chromium found (apt-get install chromium, or set MEDSEG_CHROMIUM): the check did not run")
        return NO_BROWSER
    params = load_params(REPO / "params.yaml")
    metric = params.mlflow.promotion.metric
    store = resolve_tracking_uri(params.mlflow, REPO)
    client = connect(store)
    experiment = client.get_experiment_by_name(params.mlflow.experiment)
    if experiment is None:
        log.error("%s has no experiment %r: run `dvc repro` first", store, params.mlflow.experiment)
        return 1
    rows, problems = newest_runs(client, experiment.experiment_id, args.datasets or params.active, metric)

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = contextlib.nullcontext(store) if store.startswith(("http://", "https://")) else \
            serve_ui(store, Path(tmp) / "mlflow-ui.log")
        with server as url:
            table, seen = check_in_browser(url, experiment.experiment_id, rows, metric, chromium,
                                           args.out / "mlflow_ui.png")
    problems += seen
    write_report(args.out / "mlflow_ui.md", rows, table, metric, problems, chromium, store)
    for problem in problems:
        log.error(problem)
    log.info("%d run(s) checked in the runs table: %s; %s", len(rows), "ok" if not problems else "PROBLEMS",
             args.out / "mlflow_ui.md")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
