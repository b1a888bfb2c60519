"""Training and inference throughput: our U-Net vs MONAI's UNet, fp32 and bf16.

Same data loop for every model (medseg.training.Batches over an in-memory
set, AdamW, the pipeline's Dice+CE loss), 256x256, batch 8, the thread count
of params.yaml `train.threads`. Every configuration is measured in this one
run so ratios are comparable. Prints and saves benchmarks/results/train.md.

    python benchmarks/bench_train.py [--steps 12] [--size 256]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))

from medseg.config import load_params  # noqa: E402
from medseg.dataset import ArraySet, to_tensor  # noqa: E402
from medseg.losses import build_loss  # noqa: E402
from medseg.model import ModelConfig, build_model  # noqa: E402
from medseg.training import Batches, bf16_supported, seed_everything  # noqa: E402

CLASSES = 4
BATCH = 8


def fake_set(n: int, size: int) -> ArraySet:
    rng = np.random.default_rng(0)
    return ArraySet(rng.integers(0, 255, (n, size, size, 1), dtype=np.uint8),
                    rng.integers(0, CLASSES, (n, size, size), dtype=np.uint8), [str(i) for i in range(n)])


def train_rate(model: torch.nn.Module, data: ArraySet, steps: int, bf16: bool, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    loss_fn, opt = build_loss(CLASSES), torch.optim.AdamW(model.parameters(), 1e-3)
    batches, times = Batches(data, BATCH, torch.device("cpu"), fmt, seed=0), []
    it = iter(batches)
    for step in range(steps + 2):  # two warm-up steps
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(batches)
            x, y = next(it)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return BATCH / float(np.median(times))


@torch.no_grad()
def infer_rate(model: torch.nn.Module, data: ArraySet, steps: int, bf16: bool, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).eval()
    x = to_tensor(data.images[:BATCH]).to(memory_format=fmt)
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)
        if step >= 2:
            times.append(time.perf_counter() - start)
    return BATCH / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    seed_everything(0, params.train.threads)
    data = fake_set(64, args.size)
    ours = params.train.model.model_dump()
    models = {"unet (default, params.yaml)": ModelConfig(**ours),
              "monai_unet": ModelConfig(name="monai_unet", base_filters=ours["base_filters"], depth=ours["depth"])}
    precisions = [("fp32", False, False), ("fp32 channels_last", False, True)]
    if bf16_supported(torch.device("cpu")):
        precisions.append(("bf16 channels_last", True, True))
    lines = ["| model | precision | train images/s | inference images/s |", "|---|---|---|---|"]
    for name, cfg in models.items():
        for label, bf16, cl in precisions:
            torch.manual_seed(0)
            model = build_model(cfg, 1, CLASSES)
            tr = train_rate(model, data, args.steps, bf16, cl)
            inf = infer_rate(model, data, args.steps, bf16, cl)
            lines.append(f"| {name} | {label} | {tr:.1f} | {inf:.1f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    header = (f"# Training and inference throughput\n\n{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, torch {torch.__version__}, {params.train.threads} threads; "
              f"{args.size}x{args.size}, batch {BATCH}, median of {args.steps} steps after 2 warm-up steps. "
              f"Command: `python benchmarks/bench_train.py --steps {args.steps} --size {args.size}`.\n\n")
    (REPO / "benchmarks" / "results" / "train.md").write_text(header + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
