"""DVC stage ``track``: make sure MLflow records this dataset's result once per commit.

The result is identified by its run key (``medseg.tracking.sync``): the
current git commit plus the dataset, data hash and params hash that train
wrote to ``models/<dataset>/mlflow_run.json``. When the store already holds
a finished run with that key (normally the training run itself) this stage
only says so. When it holds none, because DVC restored train from its
run-cache without running it, the results were committed since they were
computed, or training ran while the store was down, it creates one run from
the files on disk, with the same params, metrics and artifacts a live run
has (``medseg.tracking.record``). Writes nothing but that run. DVC runs the
stage when the results change; a new commit alone changes the key but no
dependency, so recording unchanged results under a new commit takes
``dvc repro -f -s track@<dataset>``.

Usage (from the repository root): ``python stages/track.py <dataset>``
"""
from medseg.config import Params
from medseg.io.cli import run_stage
from medseg.tracking.record import sync


def main(dataset: str, params: Params) -> None:
    """Record one dataset's result in MLflow unless a run already holds it."""
    sync(dataset, params)


if __name__ == "__main__":
    run_stage(main)
