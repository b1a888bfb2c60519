"""The plan stage's work: fingerprint a converted dataset and fill in its ``auto`` knobs.

``make_plan(dataset, params)`` merges the dataset's profile overrides over the
global sections (``Params.sections``, ``Params.plan_for``), measures the converted data
(``medseg.plan.fingerprint``), applies the rules (``medseg.plan.rules``) and
returns the sections and the record that ``medseg.data.plans`` writes.
"""
from __future__ import annotations

import re
from typing import Any

from medseg.config import Params
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import params_digest
from medseg.io import paths

from .fingerprint import fingerprint
from .rules import Shares, plan_sections


def rounds_and_shares(sections: dict[str, dict[str, Any]], groups: list[str]) -> tuple[int, Shares]:
    """How many models train is going to fit, and the shares of the images each one trains and validates on."""
    split = sections["split"]
    if split["folds"]:
        return split["folds"], Shares((split["folds"] - 2) / split["folds"], 1 / split["folds"])
    test = (sum(bool(re.search(split["test_groups"], g)) for g in groups) / len(groups) if split["test_groups"]
            else split["test"])
    return 1, Shares((1 - test) * (1 - split["valid"]), (1 - test) * split["valid"])


def make_plan(dataset: str, params: Params) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dataset's resolved sections and the record of the plan (fingerprint, decisions)."""
    converted = ConvertedDataset(paths.converted_dir(dataset))
    fp = fingerprint(converted)
    sections = {name: section.model_dump() for name, section in params.sections(dataset).items()}
    rounds, shares = rounds_and_shares(sections, sorted(converted.manifest["group"].unique()))
    plan = params.plan_for(dataset)
    resolved, record = plan_sections(fp, sections, plan, rounds, shares, len(converted.classes),
                                     params.overridden(dataset))
    return resolved, {"params_digest": params_digest(dataset, params), "fingerprint": fp, "rounds": rounds,
                      "budget_minutes": plan.budget_minutes,
                      "train_share": round(shares.train, 4),
                      "valid_share": round(shares.valid, 4), **record}
