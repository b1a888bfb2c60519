"""The plan file: written complete, read back as validated sections, refused when stale or incomplete."""
from __future__ import annotations

import copy

import pytest

from conftest import REPO
from medseg.config import PlanConfig, load_params
from medseg.data.plans import params_digest, read_plan, write_plan
from medseg.io.errors import DataError
from medseg.plan.rules import Shares, plan_sections

FINGERPRINT = {"images": 20, "channels": 1, "shape": {"median": [120, 160]},
               "classes": {"liver": {"pixel_fraction": 0.2, "width_px": {"median": 30.0, "p10": 20.0}}}}


def written(tmp_path, params) -> object:
    sections = {name: s.model_dump() for name, s in params.sections("synthetic").items()}
    resolved, record = plan_sections(FINGERPRINT, copy.deepcopy(sections), PlanConfig(), 1, Shares(0.6, 0.1), 4, {})
    path = tmp_path / "synthetic.json"
    write_plan(path, "synthetic", resolved, {"params_digest": params_digest("synthetic", params), **record})
    return path


def test_a_written_plan_reads_back_with_every_knob_set(tmp_path) -> None:
    params = load_params(REPO / "params.yaml")
    plan = read_plan("synthetic", params, written(tmp_path, params))
    assert list(plan.augment.size) == [128, 160]
    assert plan.train.model.stem_stride in (1, 2, 4) and plan.train.epochs >= 1
    assert "decisions" in plan.record and "params_digest" not in plan.record


def test_a_plan_made_from_other_params_is_refused(tmp_path) -> None:
    params = load_params(REPO / "params.yaml")
    path = written(tmp_path, params)
    edited = params.model_copy(update={"train": params.train.model_copy(update={"lr": 0.01})})
    with pytest.raises(DataError, match=r"synthetic.json: made from other params.*plan@synthetic"):
        read_plan("synthetic", edited, path)
    assert read_plan("synthetic", None, path).train.lr == params.train.lr  # without params: no check


def test_a_plan_with_knobs_left_auto_cannot_be_written(tmp_path) -> None:
    params = load_params(REPO / "params.yaml")
    sections = {name: s.model_dump() for name, s in params.sections("synthetic").items()}
    with pytest.raises(ValueError, match="at auto"):
        write_plan(tmp_path / "x.json", "synthetic", sections, {})
    assert not (tmp_path / "x.json").exists()
