"""Train several model configurations on one dataset's default split and compare best validation Dice.

Uses the library exactly as `stages/train.py` does (``load_training_data`` +
``fit`` with the dataset's planned `train`), with only `train.model` overridden per
configuration, so the Dice figures are the pipeline's. Needs the dataset's
`split` stage outputs (`dvc repro split@synthetic`).

    python benchmarks/compare_dice.py [--dataset synthetic] [--device cpu] \
        "name=unet,stem_stride=2,depth=3" "name=monai_unet,stem_stride=1"
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from medseg.config import ModelConfig, TrainConfig
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import read_plan
from medseg.data.shards import AugmentedDataset
from medseg.io import paths
from medseg.model.factory import build_model
from medseg.model.runtime import pick_device, seed_everything
from medseg.train.datasets import ArraySet, load_training_data
from medseg.train.loop import fit
from run_all import parse_knobs  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]


def parse_model(spec: str, base: dict) -> ModelConfig:
    """``"name=unet,depth=3"`` -> ModelConfig; unset knobs come from ``base`` (params.yaml train.model)."""
    return ModelConfig.model_validate({**base, **parse_knobs(spec)})


def train_one(model_cfg: ModelConfig, cfg: TrainConfig, train: ArraySet, valid: ArraySet, classes: list[str],
              channels: int, device: torch.device) -> dict:
    seed_everything(cfg.seed, cfg.threads)
    model = build_model(model_cfg, channels, len(classes))
    start = time.perf_counter()
    result = fit(model, train, valid, cfg, classes, device)
    seconds = time.perf_counter() - start
    train_seconds = sum(h.seconds for h in result.history)
    return {"best_dice": result.best_dice, "best_epoch": result.best_epoch, "epochs": len(result.history),
            "seconds": seconds, "train_img_s": len(train) * len(result.history) / train_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="comma-separated knobs, e.g. name=unet,stem_stride=2")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--device", default=None, help="override train.device")
    parser.add_argument("--threads", type=int, default=None, help="override train.threads")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="train each model once per seed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    update = {k: v for k, v in {"device": args.device, "threads": args.threads, "epochs": args.epochs}.items() if v}
    cfg = read_plan(args.dataset).train.model_copy(update=update)
    converted = ConvertedDataset(paths.converted_dir(args.dataset))
    train, valid = load_training_data(converted, AugmentedDataset(paths.augmented_dir(args.dataset)),
                                      paths.split_file(args.dataset))
    device = pick_device(cfg.device)
    print(f"{args.dataset}: {len(train)} train, {len(valid)} valid, {cfg.epochs} epochs, device {device}, "
          f"bf16 {cfg.bf16}, channels_last {cfg.channels_last}")
    print("| model | seed | best val pooled Dice | best epoch | epochs run | seconds | train images/s |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.models:
        model_cfg = parse_model(spec, cfg.model.model_dump())
        for seed in args.seeds or [cfg.seed]:
            r = train_one(model_cfg, cfg.model_copy(update={"seed": seed}), train, valid, converted.classes,
                          converted.channels, device)
            print(f"| {spec} | {seed} | {r['best_dice']:.4f} | {r['best_epoch']} | {r['epochs']} | "
                  f"{r['seconds']:.0f} | {r['train_img_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
