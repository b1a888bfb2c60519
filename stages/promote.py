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

``--record FILE`` also keeps what it decided; once the results are
committed, ``--tag FILE`` writes that as git tags on HEAD for DVC's model
registry (``<dataset>@v<N>.0.0`` for version N, ``<dataset>#<alias>#<k>``
when the alias moved; ``medseg.tracking.gittags``), for ``dvc artifacts get
REPO <dataset> --rev v<N>.0.0`` or ``--stage champion``. Push them with
``git push origin <tag>``.

Usage (from the repository root):
``python stages/promote.py [--record FILE]``, then ``python stages/promote.py --tag FILE``
"""
import argparse
from pathlib import Path

from medseg.config import Params
from medseg.io.cli import run_stage
from medseg.tracking.promote import promote, read_record, tag_outcomes, write_record
from medseg.tracking.store import find_repo_root


def options(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--record", type=Path, help="also write what was decided to this JSON file")
    which.add_argument("--tag", type=Path, metavar="RECORD",
                       help="promote nothing: tag HEAD as RECORD (from --record) says, for DVC's model registry")


def main(params: Params, args: argparse.Namespace) -> None:
    """Promote each active dataset's new model version when it beats the champion (or tag what was decided)."""
    if args.tag is not None:
        tag_outcomes(find_repo_root(), read_record(args.tag))
        return
    outcomes = [promote(params, dataset) for dataset in params.active]
    if args.record is not None:
        write_record(args.record, outcomes)


if __name__ == "__main__":
    run_stage(main, per_dataset=False, options=options)
