"""The measured choice of precision and layout: which candidates, timed once per machine, cached, honest to params."""
from __future__ import annotations

import json

import pytest
import torch
from test_loop import CLASSES, CPU, small_cfg, toy_set

from medseg.config import AUTO
from medseg.io import paths
from medseg.model.factory import build_model
from medseg.model.runtime import bf16_supported, seed_everything
from medseg.train import precision
from medseg.train.loop import fit
from medseg.train.precision import Candidate, cache_path, candidates, choose_runtime, time_candidates

SHAPE = (4, 1, 32, 32)
BF16 = bf16_supported(CPU)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def model_for(cfg):
    seed_everything(cfg.seed, cfg.threads)
    return build_model(cfg.model, 1, len(CLASSES))


def test_candidates_are_what_params_leave_open():
    names = lambda cfg: [c.name for c in candidates(cfg, CPU)]  # noqa: E731
    both = ["fp32/contiguous", "fp32/channels_last"] + (["bf16/contiguous", "bf16/channels_last"] if BF16 else [])
    assert names(small_cfg(bf16=AUTO, channels_last=AUTO)) == both
    assert names(small_cfg(bf16=False, channels_last=AUTO)) == ["fp32/contiguous", "fp32/channels_last"]
    assert names(small_cfg(bf16=AUTO, channels_last=True)) == [n for n in both if n.endswith("channels_last")]
    assert names(small_cfg(bf16=True, channels_last=False)) == ["bf16/contiguous" if BF16 else "fp32/contiguous"]


def test_explicit_params_are_honoured_without_timing(cache_dir, monkeypatch):
    monkeypatch.setattr(precision, "time_candidates", lambda *a, **k: pytest.fail("timed although params decide"))
    cfg = small_cfg(bf16=False, channels_last=True)
    choice = choose_runtime(model_for(cfg), cfg, SHAPE, len(CLASSES), CPU)
    assert (choice.precision, choice.channels_last, choice.chosen_by) == ("fp32", True, "params")
    assert choice.step_ms == {} and not cache_path().exists()


def test_auto_is_measured_once_then_read_from_the_cache(cache_dir, monkeypatch):
    cfg = small_cfg(bf16=AUTO, channels_last=AUTO)
    first = choose_runtime(model_for(cfg), cfg, SHAPE, len(CLASSES), CPU)
    assert first.chosen_by == "measured"
    assert set(first.step_ms) == {c.name for c in candidates(cfg, CPU)}
    assert f"{first.precision}/{'channels_last' if first.channels_last else 'contiguous'}" == \
        min(first.step_ms, key=first.step_ms.get)
    entries = json.loads((cache_dir / "runtime.json").read_text())
    assert len(entries) == 1 and next(iter(entries.values()))["machine"] == first.machine

    monkeypatch.setattr(precision, "time_candidates", lambda *a, **k: pytest.fail("measured twice"))
    second = choose_runtime(model_for(cfg), cfg, SHAPE, len(CLASSES), CPU)
    assert second.chosen_by == "cached"
    assert (second.precision, second.channels_last, second.step_ms) == \
        (first.precision, first.channels_last, first.step_ms)


def test_another_workload_is_measured_again(cache_dir):
    cfg = small_cfg(bf16=False, channels_last=AUTO)
    choose_runtime(model_for(cfg), cfg, SHAPE, len(CLASSES), CPU)
    bigger = choose_runtime(model_for(cfg), cfg, (8, 1, 32, 32), len(CLASSES), CPU)
    assert bigger.chosen_by == "measured"
    assert len(json.loads((cache_dir / "runtime.json").read_text())) == 2


def test_a_cache_that_does_not_parse_is_measured_again(cache_dir):
    cache_dir.mkdir()
    (cache_dir / "runtime.json").write_text("{not json")
    cfg = small_cfg(bf16=False, channels_last=AUTO)
    assert choose_runtime(model_for(cfg), cfg, SHAPE, len(CLASSES), CPU).chosen_by == "measured"
    json.loads((cache_dir / "runtime.json").read_text())  # rewritten whole


def test_timing_leaves_the_model_and_the_random_state_alone():
    cfg = small_cfg()
    model = model_for(cfg)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    times = time_candidates(model, [Candidate("fp32", False), Candidate("fp32", True)], SHAPE, len(CLASSES), CPU)
    assert set(times) == {"fp32/contiguous", "fp32/channels_last"} and all(t > 0 for t in times.values())
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_auto_trains_like_the_choice_it_made_and_records_it():
    """A measured run gives the weights of a run with its choice set in params (the timing changes nothing)."""
    train, valid = toy_set(12, 0), toy_set(4, 1)
    auto = small_cfg(bf16=AUTO, channels_last=AUTO, epochs=2)
    a = fit(model_for(auto), train, valid, auto, CLASSES, CPU)
    assert a.runtime["chosen_by"] == "measured" and a.runtime["machine"]
    fixed = small_cfg(bf16=a.runtime["precision"] == "bf16", channels_last=a.runtime["channels_last"], epochs=2)
    b = fit(model_for(fixed), train, valid, fixed, CLASSES, CPU)
    assert b.runtime["chosen_by"] == "params"
    for key in a.best_state:
        assert torch.equal(a.best_state[key], b.best_state[key]), key
