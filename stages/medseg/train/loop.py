"""The training loop: seeded, validated each epoch, best model by foreground Dice.

``fit(model, train, valid, cfg, classes, ...)`` trains on in-memory
``ArraySet``s and returns a ``FitResult`` with the best state dict (by the
validation Dice pooled over the validation images, ``val_pooled_dice``),
the epoch it came from and the per-epoch history. A non-finite loss raises
``NonFiniteLoss`` naming epoch and batch; the state that produced it is
never kept as best.

Determinism on CPU: ``seed_everything`` (``medseg.model.runtime``) fixes the
seeds and the thread count, batches come from a seeded ``torch.Generator``,
and nothing else draws random numbers, so two runs on one machine give
identical weights.

Several processes (``medseg.train.distributed``): pass ``world``; each process
trains on its shard of every global batch through DDP, validates the whole
validation set, and follows process 0's validation Dice, so all processes
stop at the same epoch.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from medseg.config import TrainConfig
from medseg.io.errors import StageError
from medseg.model.inference import predict_logits
from medseg.model.losses import build_loss
from medseg.model.runtime import autocast, bf16_supported, memory_format

from .datasets import ArraySet, Batches
from .distributed import World, all_true, from_main, total, wrap

log = logging.getLogger(__name__)


class NonFiniteLoss(StageError):
    """The loss became NaN or infinite."""


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    # Dice with pixels pooled over all validation images, per foreground class
    # present there, and its mean: a model-selection signal, not the per-image
    # mean that evaluate reports as test ``dice.<class>.mean``.
    val_pooled_dice: float
    val_pooled_dice_per_class: dict[str, float]
    lr: float
    seconds: float
    images_per_s: float

    def as_metrics(self) -> dict[str, float]:
        """The epoch's row of ``train_history.csv`` and its MLflow metrics (without the epoch)."""
        names = ("train_loss", "val_loss", "val_pooled_dice", "lr", "seconds", "images_per_s")
        out = {k: getattr(self, k) for k in names}
        out.update({f"val_pooled_dice_{name}": v for name, v in self.val_pooled_dice_per_class.items()})
        return out


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_dice: float
    history: list[EpochStats] = field(default_factory=list)
    stopped_early: bool = False


def train_epoch(model: nn.Module, batches: Batches, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                cfg: TrainConfig, epoch: int, bf16: bool) -> float:
    """One pass over ``batches``; the mean training loss over all processes' images."""
    model.train()
    world = batches.world
    loss_sum, seen = 0.0, 0
    bar = tqdm(batches.weighted(), total=len(batches), desc=f"epoch {epoch}", unit="batch", leave=False,
               disable=None if world.is_main else True)
    for number, (x, y, weight) in enumerate(bar, start=1):
        with autocast(x.device, bf16):
            loss = loss_fn(model(x), y)
        if not all_true(bool(torch.isfinite(loss)), world, x.device):
            where = f"epoch {epoch}, batch {number}" + (f" (process {world.rank})" if world.distributed else "")
            raise NonFiniteLoss(f"loss became {'non-finite' if torch.isfinite(loss) else loss.item()} at {where}; "
                                "lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        (loss * weight if weight != 1 else loss).backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_sum += loss.item() * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    loss_sum, seen = total([loss_sum, float(seen)], world, batches.device)
    return loss_sum / seen


def pooled_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[int, float]:
    """Dice per foreground class present in ``target``, pixels pooled over all images."""
    scores = {}
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        denom = int(p.sum() + t.sum())
        if t.any():
            scores[c] = 2.0 * int((p & t).sum()) / denom
    return scores


def validate(model: nn.Module, valid: ArraySet, loss_fn: nn.Module, num_classes: int, cfg: TrainConfig,
             device: torch.device, bf16: bool, layout: torch.memory_format,
             ) -> tuple[float, dict[int, float], torch.Tensor]:
    """Validation loss, pooled Dice per class and the predicted label maps."""
    logits = predict_logits(model, valid.images, cfg.batch_size, device, bf16, layout)
    target = torch.from_numpy(valid.labels).long()
    loss = float(loss_fn(logits, target))
    pred = logits.argmax(1)
    return loss, pooled_dice(pred, target, num_classes), pred


def loss_for(cfg: TrainConfig, classes: list[str]) -> nn.Module:
    """The training loss with ``cfg``'s weights; classes not in ``class_weights`` weigh 1."""
    weights = [cfg.class_weights.get(c, 1.0) for c in classes] if cfg.class_weights else None
    return build_loss(len(classes), dice_weight=cfg.dice_weight, ce_weight=cfg.ce_weight, class_weights=weights,
                      batch_dice=cfg.batch_dice)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    if cfg.schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=cfg.epochs, power=0.9)
    return None


def fit(model: nn.Module, train: ArraySet, valid: ArraySet, cfg: TrainConfig, classes: list[str],
        device: torch.device, on_epoch: Callable[[EpochStats, torch.Tensor], None] | None = None,
        world: World = World()) -> FitResult:
    """Train ``model`` and return the best state by ``val_pooled_dice``.

    With several processes (``world``), call it in every process; ``on_epoch``
    is called in process 0 only.
    """
    bf16 = cfg.bf16 and bf16_supported(device)
    if cfg.bf16 and not bf16:
        log.warning("train.bf16 is set but %s does not support bf16; training in fp32", device)
    layout = memory_format(cfg.channels_last)
    model.to(device, memory_format=layout)
    net = wrap(model, world, device)
    loss_fn = loss_for(cfg, classes)
    optimizer = build_optimizer(net, cfg)
    batches = Batches(train, cfg.batch_size, device, layout, cfg.seed, world)
    scheduler = build_scheduler(optimizer, cfg)
    result = FitResult(best_state={}, best_epoch=0, best_dice=-1.0)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(net, batches, loss_fn, optimizer, cfg, epoch, bf16)
        seconds = time.perf_counter() - start
        val_loss, per_class, pred = validate(model, valid, loss_fn, len(classes), cfg, device, bf16, layout)
        val_dice = from_main(float(np.mean(list(per_class.values()))) if per_class else 0.0, world, device)
        stats = EpochStats(epoch, train_loss, val_loss, val_dice, {classes[c]: d for c, d in per_class.items()},
                           lr, seconds, len(train) / seconds)
        result.history.append(stats)
        if world.is_main:
            log.info("epoch %d: train loss %.4f, val loss %.4f, val pooled dice %.4f %s, lr %.2g, %.1f img/s",
                     epoch, train_loss, val_loss, val_dice,
                     {k: round(v, 3) for k, v in stats.val_pooled_dice_per_class.items()}, lr, stats.images_per_s)
        if val_dice > result.best_dice:
            result.best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.best_dice = epoch, val_dice
        if on_epoch is not None and world.is_main:
            on_epoch(stats, pred)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_dice)
        elif scheduler is not None:
            scheduler.step()
        if epoch - result.best_epoch >= cfg.early_stopping:
            if world.is_main:
                log.info("no validation improvement for %d epochs; stopping early", cfg.early_stopping)
            result.stopped_early = True
            break
    return result
