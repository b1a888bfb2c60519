"""Training step speed on each real dataset's plan: the loop as it was against the loop as it is, in one run.

For each dataset whose plan is kept in ``benchmarks/results/real_data/<name>.json``
it builds the planned network and ``Batches`` (patches, foreground sampling,
online augmentation) over arrays of the planned canvas, then times
``medseg.train.loop.train_epoch`` (loss with the class groups' Dice terms, backward, clipping, optimiser step,
batch making) in the plan's precision and memory layout, two ways, in
alternating blocks so that a slow moment of the machine hits both:

- **before**: AdamW with PyTorch's default per-tensor-list step;
- **now**: the loop's own ``build_optimizer`` (fused AdamW).

(Making the next batch in a thread during the step was measured too, and
dropped: the thread's own OpenMP team competes with the training thread's on
2 cores, and steps became 2-36% slower.)

The pixel values do not change the time, so the arrays are random images with
one labelled block each. Writes ``benchmarks/results/step_speed.md`` with the
CPU model and the training time each dataset's ``dvc repro`` would save.

    python benchmarks/step_speed.py [--datasets us-liver-mini,ddti-thyroid] [--steps 20] [--blocks 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from ct_volumes import cpu_model

from medseg.config import EvaluateConfig, TrainConfig
from medseg.model.factory import build_model
from medseg.model.runtime import seed_everything
from medseg.train import loop
from medseg.train.datasets import ArraySet, Batches
from medseg.train.precision import choose_runtime

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("us-liver-mini", "ddti-thyroid", "chase-retina-mini", "busi-malignant-mini", "synthetic")


def arrays(plan: dict, n: int = 24) -> ArraySet:
    height, width = plan["augment"]["size"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, height, width, plan["fingerprint"]["channels"]), dtype=np.uint8)
    labels = np.zeros((n, height, width), np.uint8)
    classes = len(plan["fingerprint"]["classes"])
    for i in range(n):
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        labels[i, y:y + height // 4, x:x + width // 4] = 1 + i % classes
    return ArraySet(images, labels, [str(i) for i in range(n)])


@contextmanager
def before():
    """The loop as it was: AdamW's default (per-tensor-list) step."""
    def unfused(model, cfg):
        kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    with mock.patch.object(loop, "build_optimizer", unfused):
        yield


def time_plan(plan: dict, steps: int, blocks: int) -> dict:
    cfg = TrainConfig.model_validate({**plan["train"], "steps_per_epoch": steps})
    classes = ["background", *plan["fingerprint"]["classes"]]
    data = arrays(plan)
    seed_everything(cfg.seed, cfg.threads)
    device = torch.device("cpu")
    model = build_model(cfg.model, plan["fingerprint"]["channels"], len(classes))
    height, width = cfg.patch_size or plan["augment"]["size"]
    choice = choose_runtime(model, cfg, (cfg.batch_size, plan["fingerprint"]["channels"], height, width),
                            len(classes), device)
    model.to(memory_format=choice.layout)
    loss_fn = loop.loss_for(cfg, classes, EvaluateConfig.model_validate(plan["evaluate"]).groups(classes))
    seconds: dict[str, list[float]] = {"before": [], "now": []}
    for block in range(blocks + 1):  # block 0 warms up both
        for name in ("before", "now"):
            with before() if name == "before" else nullcontext():
                optimizer = loop.build_optimizer(model, cfg)
                batches = Batches(data, cfg.batch_size, device, choice.layout, cfg.seed, steps=steps,
                                  patch=cfg.patch_size, foreground=cfg.foreground_fraction, online=cfg.online)
                start = time.perf_counter()
                loop.train_epoch(model, batches, loss_fn, optimizer, cfg, 1, choice.bf16)
                if block:
                    seconds[name].append((time.perf_counter() - start) / steps)
    out = {name: statistics.median(v) * 1000 for name, v in seconds.items()}
    out["runtime"] = f"{choice.precision}, {'channels_last' if choice.channels_last else 'contiguous'}"
    return out


def report(rows: dict[str, dict], stored: dict[str, dict]) -> str:
    lines = [
        "# Training step: the loop before and now, on each real dataset's plan",
        "",
        f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
        f"Command: `python benchmarks/step_speed.py`. Measured {datetime.now():%Y-%m-%d}.",
        "",
        "Median milliseconds per training step (batch making, forward, loss, backward, clipping, optimiser "
        "step) of `train_epoch` on the planned network, batch and patch, in the precision and layout the "
        "plan trains in here, the two loops timed in alternating blocks in one process. *Before*: AdamW's "
        "default step. *Now*: fused AdamW. The last column applies the ratio to the training seconds of that "
        "dataset's `dvc repro` in `real_data.md` (which ran the loop as it was).",
        "",
        "| dataset | precision, layout; network; batch x patch | before ms/step | now ms/step | speed-up "
        "| training s in real_data.md -> expected |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        plan = stored[name]["plan"]
        t = plan["train"]
        patch = t["patch_size"] or plan["augment"]["size"]
        ratio = r["before"] / r["now"]
        trained = stored[name]["train"]["train_seconds"]
        lines.append(f"| {name} | {r['runtime']}; base {t['model']['base_filters']}, depth {t['model']['depth']}, stem "
                     f"{t['model']['stem_stride']}; {t['batch_size']} x {patch[0]}x{patch[1]} | {r['before']:.1f} | "
                     f"{r['now']:.1f} | {ratio:.2f}x | {trained:.0f} -> {trained / ratio:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "step_speed.md"))
    args = parser.parse_args()
    stored = {name: json.loads((RESULTS / "real_data" / f"{name}.json").read_text())
              for name in args.datasets.split(",")}
    rows = {}
    for name, result in stored.items():
        rows[name] = time_plan(result["plan"], args.steps, args.blocks)
        print(name, rows[name], flush=True)
    text = report(rows, stored)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
