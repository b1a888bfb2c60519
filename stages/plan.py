"""DVC stage ``plan``: fingerprint the converted dataset and plan its ``auto`` knobs.

Reads ``data/converted/<dataset>/`` and the params (the global sections with
the dataset profile's overrides, and ``plan``); writes
``data/plan/<dataset>.json`` (``medseg.data.plans``): the fingerprint, what
was planned and why, and the complete sections the later stages run with.

Usage (from the repository root): ``python stages/plan.py <dataset>``
"""
import logging

from medseg.config import Params
from medseg.data.plans import write_plan
from medseg.io import paths
from medseg.io.cli import run_stage
from medseg.plan.make import make_plan

log = logging.getLogger("plan")


def main(dataset: str, params: Params) -> None:
    """Plan one dataset's training from its fingerprint."""
    sections, record = make_plan(dataset, params)
    write_plan(paths.plan_file(dataset), dataset, sections, record)
    planned = {k: d["value"] for k, d in record["decisions"].items() if d["source"] == "planned"}
    log.info("%s: %s%s", dataset, planned, "; the training budget binds" if record["budget_binds"] else "")


if __name__ == "__main__":
    run_stage(main)
