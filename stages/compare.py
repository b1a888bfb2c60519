"""DVC stage ``compare``: one table over every active dataset's results.

Reads ``metrics/datasets/<name>/{eval.json,train.json}`` and
``data/converted/<name>/report.json`` for each dataset in params ``active``;
writes ``metrics/summary.json`` (keyed by dataset), ``metrics/summary.md``,
``metrics/summary_dice.csv`` (data for ``dvc plots``) and
``metrics/summary.png`` (``medseg.evaluate.summary``).

Usage (from the repository root): ``python stages/compare.py``
"""
import logging

from medseg.config import Params
from medseg.evaluate.summary import write_summary
from medseg.io.cli import run_stage

log = logging.getLogger("compare")


def main(params: Params) -> None:
    """Summarise every active dataset's results in one table and chart."""
    summary = write_summary(params.active)
    log.info("summary of %d dataset(s): %s", len(summary),
             {n: None if e["mean_fg_dice"] is None else round(e["mean_fg_dice"], 3) for n, e in summary.items()})


if __name__ == "__main__":
    run_stage(main, per_dataset=False)
