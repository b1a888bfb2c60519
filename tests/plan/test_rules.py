"""The plan's rules: each planned knob follows the fingerprint, a set knob is kept, nothing is left auto."""
from __future__ import annotations

import copy

import pytest

from conftest import REPO
from medseg.config import PlanConfig, load_params, unresolved
from medseg.data.plans import SECTIONS
from medseg.plan.rules import Shares, plan_sections, step_gflops, windows


def fingerprint(height: int, width: int, thinnest: float, images: int = 30) -> dict:
    return {"images": images, "channels": 1, "shape": {"median": [height, width]},
            "classes": {"lesion": {"pixel_fraction": 0.04, "width_px": {"median": thinnest, "p10": thinnest}}}}


@pytest.fixture(scope="module")
def sections() -> dict:
    params = load_params(REPO / "params.yaml")
    return {name: section.model_dump() for name, section in params.sections("synthetic").items()}


def plan(sections: dict, fp: dict, rounds: int = 1, overridden: dict | None = None, valid: float = 0.1,
         **cfg) -> tuple[dict, dict]:
    return plan_sections(fp, copy.deepcopy(sections), PlanConfig(**cfg), rounds, Shares(0.6, valid), 2,
                         overridden or {})


def test_every_auto_knob_is_filled(sections) -> None:
    resolved, record = plan(sections, fingerprint(576, 768, 20))
    for name, model in SECTIONS.items():
        assert unresolved(model.model_validate(resolved[name])) == [], name
    assert {d["source"] for d in record["decisions"].values()} == {"planned"}
    assert all(d["why"] for d in record["decisions"].values())


def test_the_canvas_keeps_the_aspect_ratio_and_caps_the_longer_side(sections) -> None:
    assert plan(sections, fingerprint(576, 768, 20))[0]["augment"]["size"] == [384, 512]
    assert plan(sections, fingerprint(300, 300, 20))[0]["augment"]["size"] == [304, 304]
    assert plan(sections, fingerprint(100, 160, 20))[0]["augment"]["size"] == [96, 160]


def test_thin_structures_get_full_resolution_and_large_ones_a_stem(sections) -> None:
    assert plan(sections, fingerprint(512, 512, 1.7))[0]["train"]["model"]["stem_stride"] == 1  # vessels
    assert plan(sections, fingerprint(512, 512, 6))[0]["train"]["model"]["stem_stride"] == 2
    assert plan(sections, fingerprint(512, 512, 40))[0]["train"]["model"]["stem_stride"] == 4  # masses


def test_large_canvases_train_on_patches_and_depth_fits_the_patch(sections) -> None:
    resolved, _ = plan(sections, fingerprint(512, 512, 1.7))
    train = resolved["train"]
    assert train["patch_size"] == [352, 352] and train["model"]["depth"] == 5 and train["batch_size"] == 2
    small, _ = plan(sections, fingerprint(256, 256, 40))
    assert small["train"]["patch_size"] is None and small["train"]["model"]["depth"] == 4  # 256 / 4 / 2**4 = 4


def test_the_budget_sets_the_steps_and_a_small_dataset_stops_at_the_pass_cap(sections) -> None:
    tight, record = plan(sections, fingerprint(512, 512, 1.7), budget_minutes=2)
    assert record["budget_binds"] and tight["train"]["model"]["base_filters"] == 16  # too few passes at 32
    roomy, record = plan(sections, fingerprint(256, 256, 40, images=10), budget_minutes=60)
    assert not record["budget_binds"]
    steps = roomy["train"]["epochs"] * roomy["train"]["steps_per_epoch"]
    pixels_per_pass = 10 * 0.6 * 256 * 256
    assert steps * roomy["train"]["batch_size"] * 256 * 256 == pytest.approx(100 * pixels_per_pass, rel=0.05)


def test_a_tight_budget_shrinks_the_canvas_of_large_structures_only(sections) -> None:
    large = fingerprint(300, 300, 83, images=655)  # nodule-centred crops
    roomy, _ = plan(sections, large, rounds=5, budget_minutes=200)
    assert roomy["augment"]["size"] == [304, 304]
    tight, record = plan(sections, large, rounds=5, budget_minutes=16)
    assert tight["augment"]["size"][0] < 304 and tight["augment"]["size"][0] == tight["augment"]["size"][1]
    assert "too few passes" in record["decisions"]["augment.size"]["why"]
    thin, _ = plan(sections, fingerprint(300, 300, 12, images=655), rounds=5, budget_minutes=16)
    assert thin["augment"]["size"] == [304, 304]  # 12 px wide: one step down would leave it under 16 px
    fixed = copy.deepcopy(sections)
    fixed["augment"]["size"] = [304, 304]
    kept, _ = plan(fixed, large, rounds=5, budget_minutes=16, overridden={"augment": ["size"]})
    assert kept["augment"]["size"] == [304, 304]  # a set canvas is never shrunk


def test_validation_comes_out_of_the_budget(sections) -> None:
    fp = fingerprint(512, 512, 40, images=400)
    few, record_few = plan(sections, fp, valid=0.01, budget_minutes=2)
    many, record_many = plan(sections, fp, valid=0.3, budget_minutes=2)
    assert record_few["budget_binds"] and record_many["budget_binds"]
    steps = [p["train"]["epochs"] * p["train"]["steps_per_epoch"] for p in (few, many)]
    assert steps[1] < 0.9 * steps[0]  # 30 times the validation images leave fewer training steps
    for record in (record_few, record_many):  # the plan's own estimate stays within the budget
        assert record["planned_train_seconds"] <= 2 * 60 * 1.02


def test_sliding_windows_overlap_by_half() -> None:
    assert windows((384, 512), (256, 384)) == 4
    assert windows((512, 512), (352, 352)) == 4
    assert windows((304, 304), (304, 304)) == 1
    assert windows((100, 1000), (100, 200)) == 9


def test_a_set_knob_is_kept_and_recorded_as_set(sections) -> None:
    fixed = copy.deepcopy(sections)
    fixed["train"]["model"]["stem_stride"] = 2
    resolved, record = plan(fixed, fingerprint(512, 512, 40), overridden={"train": ["model.stem_stride"]})
    assert resolved["train"]["model"]["stem_stride"] == 2
    assert record["decisions"]["train.model.stem_stride"] == {"value": 2, "source": "dataset profile"}


def test_rare_classes_weigh_more_up_to_the_cap(sections) -> None:
    fp = fingerprint(256, 256, 40)
    fp["classes"]["rare"] = {"pixel_fraction": 0.0001, "width_px": {"median": 40, "p10": 40}}
    weights = plan(sections, fp)[0]["train"]["class_weights"]
    assert 1 < weights["lesion"] < weights["rare"] == 3.0


def test_step_cost_is_counted_without_computing() -> None:
    model = {"name": "unet", "base_filters": 16, "depth": 4, "first_kernel": 3, "dilation": 1, "dropout": 0.0,
             "norm": "batch", "stem_stride": 1}
    small = step_gflops(model, 3, 2, 2, (128, 128))
    assert step_gflops(model, 3, 2, 4, (128, 128)) == pytest.approx(2 * small, rel=0.01)
    assert step_gflops({**model, "stem_stride": 2}, 3, 2, 2, (128, 128)) < small / 3
