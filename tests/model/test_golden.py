"""Golden output: the default network's logits on a fixed input, pinned by numbers the earlier code computed.

A refactor of the blocks, the factory or the initialisation order that
changes a single weight or operation changes these numbers and fails here,
long before a full training run would show it. The tolerance allows for
other CPUs' kernels (float32 sums in another order), not for other maths.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medseg.config import ModelConfig
from medseg.model.factory import build_model

GOLDEN = json.loads((Path(__file__).with_name("golden_unet.json")).read_text())


def logits() -> torch.Tensor:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(GOLDEN["seed"])
        model = build_model(ModelConfig(**GOLDEN["model"]), GOLDEN["in_channels"], GOLDEN["num_classes"]).eval()
        seed = GOLDEN["input"]["generator_seed"]
        x = torch.rand(*GOLDEN["input"]["shape"], generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return model(x)
    finally:
        torch.set_num_threads(threads)


def test_default_network_gives_the_pinned_logits() -> None:
    y = logits()
    assert list(y.shape) == GOLDEN["shape"]
    idx = torch.linspace(0, y.numel() - 1, len(GOLDEN["sampled"])).long()
    torch.testing.assert_close(y.flatten()[idx], torch.tensor(GOLDEN["sampled"]), rtol=1e-4, atol=1e-5)
    assert float(y.sum()) == pytest.approx(GOLDEN["sum"], rel=1e-4)
    assert float(y.abs().sum()) == pytest.approx(GOLDEN["abs_sum"], rel=1e-4)


def test_default_network_has_the_pinned_size() -> None:
    model = build_model(ModelConfig(**GOLDEN["model"]), GOLDEN["in_channels"], GOLDEN["num_classes"])
    assert sum(p.numel() for p in model.parameters()) == GOLDEN["n_params"]


def test_a_model_with_unplanned_knobs_is_refused() -> None:
    with pytest.raises(ValueError, match="'auto'"):
        build_model(ModelConfig(), GOLDEN["in_channels"], GOLDEN["num_classes"])
