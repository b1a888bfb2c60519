"""Register each active dataset's trained model and move its ``champion`` alias only if it scores better.

A command (run by ``.ci/retrain.sh`` after ``dvc repro``), not a DVC stage:
it changes the model registry, not files. For every dataset in ``active``,
the run recording the result on disk gets its registered version of
``medseg-<dataset>``, which takes ``mlflow.promotion.alias`` when no version
holds it yet, or when its test score (``mlflow.promotion.metric`` of
``eval.json``) beats the holder's by more than ``mlflow.promotion.margin``
on the same test split (``medseg.tracking.promote``). The decision, with
both numbers, goes to ``$GITHUB_STEP_SUMMARY`` when set, else to stdout.
Run it in the commit that produced the results, before committing them.

Usage (from the repository root): ``python stages/promote.py``
"""
from medseg.config import Params
from medseg.io.cli import run_stage
from medseg.tracking.promote import promote


def main(params: Params) -> None:
    """Promote each active dataset's new model version when it beats the champion."""
    for dataset in params.active:
        promote(params, dataset)


if __name__ == "__main__":
    run_stage(main, per_dataset=False)
