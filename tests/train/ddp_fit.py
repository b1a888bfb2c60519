"""A tiny ``fit`` run, as one process or as every process of ``torchrun`` (used by test_scale_out.py).

    torchrun --standalone --nproc_per_node 2 tests/train/ddp_fit.py OUT.pt [DICE_WEIGHT]

Process 0 saves the best state dict, and the training loss and validation
Dice per epoch, to OUT.pt. DICE_WEIGHT (default 1) is ``train.dice_weight``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from medseg.config import TrainConfig
from medseg.model.factory import build_model
from medseg.model.runtime import seed_everything
from medseg.train.datasets import ArraySet
from medseg.train.distributed import session, threads_per_process
from medseg.train.loop import fit

CLASSES = ["background", "disc"]


def make_set(n: int, seed: int) -> ArraySet:
    """Bright discs on noise, 32x32: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    images, labels = [], []
    for _ in range(n):
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 8)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images.append((rng.normal(60, 20, (32, 32)) + 120 * disc).clip(0, 255).astype(np.uint8)[..., None])
        labels.append(disc.astype(np.uint8))
    return ArraySet(np.stack(images), np.stack(labels), [str(i) for i in range(n)])


# Instance norm and no dropout: then N processes compute the update of one
# process with the same global batch (BatchNorm statistics and dropout masks
# would be per process), exactly for cross-entropy; the batch Dice term is
# pooled over each process's shard.
CONFIG = dict(model={"name": "unet", "base_filters": 4, "depth": 2, "norm": "instance", "dropout": 0.0,
                     "stem_stride": 1},
              epochs=3, steps_per_epoch=None, batch_size=6, patch_size=None, class_weights={}, online={"p": 0.0},
              lr=0.01, early_stopping=10, seed=7, threads=2, bf16=False, channels_last=False, preview_images=0,
              schedule="plateau", grad_clip=1.0, postprocess={"flip_tta": "off", "groups": "off",
                                                              "largest_component": "off"})


def run(out: Path, dice_weight: float) -> None:
    cfg = TrainConfig(**CONFIG, dice_weight=dice_weight)
    train, valid = make_set(21, 0), make_set(8, 1)  # 21 = 3 full batches of 6 and a last batch of 3
    with session("auto", torch.device("cpu")) as (world, device):
        seed_everything(cfg.seed, threads_per_process(cfg.threads, world))
        model = build_model(cfg.model, 1, len(CLASSES))
        result = fit(model, train, valid, cfg, CLASSES, device, world=world)
        if world.is_main:
            torch.save({"state": result.best_state, "val_dice": [s.val_dice for s in result.history],
                        "train_loss": [s.train_loss for s in result.history], "processes": world.size}, out)


if __name__ == "__main__":
    run(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
