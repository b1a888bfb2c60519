"""The plan's rules: each planned knob follows the fingerprint, a set knob is kept, nothing is left auto."""
from __future__ import annotations

import copy

import pytest

from conftest import REPO
from medseg.config import PlanConfig, load_params, unresolved
from medseg.data.plans import SECTIONS
from medseg.plan.rules import plan_sections, step_gflops


def fingerprint(height: int, width: int, thinnest: float, images: int = 30) -> dict:
    return {"images": images, "channels": 1, "shape": {"median": [height, width]},
            "classes": {"lesion": {"pixel_fraction": 0.04, "width_px": {"median": thinnest, "p10": thinnest}}}}


@pytest.fixture(scope="module")
def sections() -> dict:
    params = load_params(REPO / "params.yaml")
    return {name: section.model_dump() for name, section in params.sections("synthetic").items()}


def plan(sections: dict, fp: dict, rounds: int = 1, overridden: dict | None = None, **cfg) -> tuple[dict, dict]:
    return plan_sections(fp, copy.deepcopy(sections), PlanConfig(**cfg), rounds, 0.6, 2, overridden or {})


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
    assert small["train"]["patch_size"] is None and small["train"]["model"]["depth"] == 3


def test_the_budget_sets_the_steps_and_a_small_dataset_stops_at_the_pass_cap(sections) -> None:
    tight, record = plan(sections, fingerprint(512, 512, 1.7), budget_minutes=2)
    assert record["budget_binds"] and tight["train"]["model"]["base_filters"] == 16  # too few passes at 32
    roomy, record = plan(sections, fingerprint(256, 256, 40, images=10), budget_minutes=60)
    assert not record["budget_binds"]
    steps = roomy["train"]["epochs"] * roomy["train"]["steps_per_epoch"]
    pixels_per_pass = 10 * 0.6 * 256 * 256
    assert steps * roomy["train"]["batch_size"] * 256 * 256 == pytest.approx(100 * pixels_per_pass, rel=0.05)


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
