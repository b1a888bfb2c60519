"""The plan (``data/plan/<name>.json``): written by the plan stage, read by augment, split, train and evaluate.

One small JSON file per dataset, kept in git like the split table:

- ``fingerprint``: what was measured (``medseg.plan.fingerprint``);
- ``decisions``: for every plannable knob, its value and whether it was
  ``planned`` (with the reason), set in ``params.yaml`` or in the dataset's
  profile; ``budget_binds``: whether the training budget, rather than the
  pass cap, set the number of steps; ``planned_train_seconds``: the training
  time the plan expects, every round and validation together, at the
  reference rates (compare with ``train_seconds`` in ``train.json``);
- ``augment``, ``split``, ``train``, ``evaluate``: the dataset's complete
  sections, every ``auto`` filled in. These are what the later stages run
  with; ``dvc.yaml`` lists each stage's sections of this file as its params,
  so a change re-runs only the stages whose section changed;
- ``params_digest``: a hash of the params the plan was made from (the
  dataset's merged sections and ``plan``). A stage given the current params
  refuses a plan made from others, so running a stage script by hand after
  editing params.yaml cannot silently use stale knobs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.config import AugmentConfig, EvaluateConfig, Params, SplitConfig, TrainConfig, unresolved
from medseg.io import paths
from medseg.io.errors import DataError
from medseg.io.tables import read_json, write_json

SECTIONS = {"augment": AugmentConfig, "split": SplitConfig, "train": TrainConfig, "evaluate": EvaluateConfig}


@dataclass(frozen=True)
class Plan:
    """A dataset's resolved sections, and the record of how they were chosen."""

    dataset: str
    augment: AugmentConfig
    split: SplitConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    record: dict[str, Any]

    def sections(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SECTIONS}


def params_digest(dataset: str, params: Params) -> str:
    """Hash of what a plan of ``dataset`` is made from: its merged sections (``auto`` kept) and ``plan``."""
    made_from = {name: section.model_dump(mode="json") for name, section in params.sections(dataset).items()}
    made_from["plan"] = params.plan_for(dataset).model_dump(mode="json")
    return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()[:16]


def write_plan(path: Path, dataset: str, sections: dict[str, Any], record: dict[str, Any]) -> None:
    models = {name: SECTIONS[name].model_validate(section) for name, section in sections.items()}
    left = [f"{name}.{knob}" for name, model in models.items() for knob in unresolved(model)]
    if left:
        raise ValueError(f"the plan left {left} at auto")
    dumped = {name: model.model_dump(mode="json") for name, model in models.items()}
    write_json(path, {"dataset": dataset, **record, **dumped})


def read_plan(dataset: str, params: Params | None = None, path: Path | None = None) -> Plan:
    """The plan of ``dataset``; ``DataError`` when it is missing, incomplete, not valid, or (given the current
    ``params``) made from other params."""
    path = paths.plan_file(dataset) if path is None else Path(path)
    raw = read_json(path)
    if params is not None and raw.get("params_digest") != params_digest(dataset, params):
        raise DataError(path, "made from other params than params.yaml holds now; re-plan first "
                              f"(dvc repro plan@{dataset}, or python stages/plan.py {dataset})")
    try:
        sections = {name: model.model_validate(raw[name]) for name, model in SECTIONS.items()}
    except (KeyError, ValueError) as exc:
        raise DataError(path, f"not a complete plan ({exc}); run the plan stage (dvc repro plan@{dataset})") from None
    left = [f"{name}.{knob}" for name, section in sections.items() for knob in unresolved(section)]
    if left:
        raise DataError(path, f"knobs left at auto: {left}")
    record = {k: v for k, v in raw.items() if k not in SECTIONS and k not in ("dataset", "params_digest")}
    return Plan(dataset, **sections, record=record)
