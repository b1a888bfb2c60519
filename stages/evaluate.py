"""DVC stage ``evaluate``: score the trained model(s) on the test split.

Predictions are made at the training size and resized back to each image's
native resolution before scoring. Writes ``metrics/datasets/<dataset>/eval.json``
(stable keys for ``dvc metrics diff``), a per-image CSV, the image-level and
pixel confusion matrices, and an overlay grid of the best and worst cases;
the test metrics are added to the training run in MLflow
(``medseg.evaluate.run``).

Usage (from the repository root): ``python stages/evaluate.py <dataset>``
"""
import logging

from medseg.config import Params
from medseg.evaluate.run import evaluate_dataset
from medseg.io.cli import run_stage

log = logging.getLogger("evaluate")


def main(dataset: str, params: Params) -> None:
    """Evaluate one dataset's model(s) on the test split, or on every held-out fold."""
    metrics = evaluate_dataset(dataset, params)
    log.info("%s: mean foreground dice %.4f on %d test images; %s", dataset, metrics["mean_fg_dice"] or float("nan"),
             metrics["n_test"], {c: round(v["mean"], 3) for c, v in metrics["dice"].items() if v["mean"] is not None})


if __name__ == "__main__":
    run_stage(main)
