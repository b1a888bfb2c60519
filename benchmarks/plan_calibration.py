"""Calibrate the plan's cost model: seconds per training step from counted FLOPs and pixels.

The plan stage turns ``plan.budget_minutes`` into a number of steps with

    seconds per step = GFLOP per step / reference_gflops + megapixels per step / reference_mpx

where the FLOPs (forward and backward) are counted on the meta device and the
pixel term pays for what does not scale with the network's FLOPs (online
augmentation, loss, normalisation, memory traffic). This script times real
training steps (``medseg.train.loop.train_epoch``: the default loss, bf16 and
channels_last as in params.yaml, online augmentation on) for networks and
batches like the ones the plan picks, fits the two constants by least
squares, and writes ``benchmarks/results/plan_calibration.md``. Put the
fitted constants in params.yaml's ``plan`` section.

    python benchmarks/plan_calibration.py [--steps 12]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from medseg.config import ModelConfig, TrainConfig, load_params
from medseg.model.factory import build_model
from medseg.model.runtime import memory_format, seed_everything
from medseg.plan.rules import step_gflops
from medseg.train.datasets import ArraySet, Batches
from medseg.train.loop import build_optimizer, loss_for, train_epoch
from medseg.train.precision import resolved

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# (stem, base_filters, depth, channels, classes, batch, patch): shapes like the plans of the shared datasets.
CASES = [
    (4, 32, 3, 1, 3, 3, (256, 384)),
    (4, 16, 3, 1, 2, 3, (304, 304)),
    (4, 32, 3, 1, 2, 4, (256, 256)),
    (4, 32, 3, 1, 4, 2, (288, 384)),
    (2, 16, 4, 1, 2, 4, (256, 256)),
    (1, 16, 5, 3, 2, 2, (352, 352)),
    (1, 16, 4, 3, 2, 2, (256, 256)),
]


def time_steps(case: tuple, steps: int, cfg: TrainConfig) -> float:
    """Median seconds per training step of ``case`` (after two warm-up steps)."""
    stem, width, depth, channels, classes, batch, patch = case
    model_cfg = {**cfg.model.model_dump(), "stem_stride": stem, "base_filters": width, "depth": depth}
    seed_everything(0, cfg.threads)
    rng = np.random.default_rng(0)
    size = (patch[0] + 32, patch[1] + 32)
    data = ArraySet(rng.integers(0, 255, (8, *size, channels), dtype=np.uint8),
                    rng.integers(0, classes, (8, *size), dtype=np.uint8), [str(i) for i in range(8)])
    model = build_model(ModelConfig.model_validate(model_cfg), channels, classes)
    device = torch.device("cpu")
    train = cfg.model_copy(update={"model": ModelConfig.model_validate(model_cfg), "batch_size": batch,
                                   "patch_size": list(patch), "class_weights": None})
    train = resolved(train, model, (batch, channels, *patch), classes, device)
    layout = memory_format(train.channels_last)
    model.to(device, memory_format=layout)
    loss_fn = loss_for(train, [f"c{i}" for i in range(classes)])
    optimizer = build_optimizer(model, train)
    bf16 = train.bf16
    times = []
    for step in range(steps + 2):
        batches = Batches(data, batch, device, layout, step, steps=1, patch=patch, foreground=0.33,
                          online=train.online)
        start = time.perf_counter()
        train_epoch(model, batches, loss_fn, optimizer, train, 1, bf16)
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", default=str(RESULTS / "plan_calibration.md"))
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    cfg = params.train
    rows = []
    for case in CASES:
        stem, width, depth, channels, classes, batch, patch = case
        model = {**cfg.model.model_dump(), "stem_stride": stem, "base_filters": width, "depth": depth}
        gflop = step_gflops(model, channels, classes, batch, patch)
        mpx = batch * patch[0] * patch[1] / 1e6
        seconds = time_steps(case, args.steps, cfg)
        rows.append((case, gflop, mpx, seconds))
        print(f"{case}: {gflop:.1f} GFLOP, {mpx:.3f} Mpx, {seconds * 1000:.0f} ms/step", flush=True)
    a = np.array([[g, m] for _, g, m, _ in rows])
    t = np.array([s for *_, s in rows])
    coef, *_ = np.linalg.lstsq(a, t, rcond=None)
    coef = np.maximum(coef, 1e-9)
    gflops, mpx_rate = 1 / coef[0], 1 / coef[1]
    old = params.plan
    lines = ["# Plan cost model calibration\n",
             f"{datetime.now():%Y-%m-%d}, {platform.machine()} ({cpu_model()}), {os.cpu_count()} cores, "
             f"{cfg.threads} threads, bf16 {cfg.bf16}, channels_last {cfg.channels_last}. Command: "
             "`python benchmarks/plan_calibration.py`.\n",
             "seconds per step = GFLOP / reference_gflops + Mpx / reference_mpx, fitted by least squares: "
             f"**reference_gflops {gflops:.0f}, reference_mpx {mpx_rate:.2f}** (params.yaml has "
             f"{old.reference_gflops:g} and {old.reference_mpx:g}).\n",
             "| stem | width | depth | channels | classes | batch | patch | GFLOP/step | Mpx/step | measured ms | "
             "model ms | params.yaml model ms |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (stem, width, depth, channels, classes, batch, patch), g, m, s in rows:
        fitted = g / gflops + m / mpx_rate
        shipped = g / old.reference_gflops + m / old.reference_mpx
        lines.append(f"| {stem} | {width} | {depth} | {channels} | {classes} | {batch} | {patch[0]}x{patch[1]} | "
                     f"{g:.1f} | {m:.3f} | {s * 1000:.0f} | {fitted * 1000:.0f} | {shipped * 1000:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
